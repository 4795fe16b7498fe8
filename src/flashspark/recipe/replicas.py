"""Replicas behind the router: each replica group of a recipe as a deployment recipe of its own.

A recipe with `[[replicas]]` describes a fleet: every group is one whole TP deployment (its nodes,
its rendezvous, its API), and the router in front of them is the endpoint clients use. Each
replica's recipe is the fleet's recipe narrowed to the group, so every rule, the render and the
lifecycle of one deployment apply to it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from flashspark.recipe.model import Node, Recipe, ReplicaGroup


@dataclass(frozen=True)
class Replica:
    group: ReplicaGroup
    recipe: Recipe

    @property
    def name(self) -> str:
        return self.group.name


def replica_deployment(recipe: Recipe, group: ReplicaGroup) -> str:
    return f"{recipe.cluster.name}-{group.name}"


def replica_recipe(recipe: Recipe, group: ReplicaGroup) -> Recipe:
    """The fleet's recipe narrowed to one group (its nodes, rendezvous and API); names must be known."""
    by_name = {node.name: node for node in recipe.nodes}
    nodes: list[Node] = [by_name[name] for name in group.nodes]
    head = nodes[0]
    master = group.master_addr or (head.vllm_host_ip if len(nodes) > 1 else recipe.cluster.master_addr)
    cluster = recipe.cluster.model_copy(update={"name": replica_deployment(recipe, group), "master_addr": master})
    api = recipe.api.model_copy(
        update={
            "host": group.api_host or head.vllm_host_ip or recipe.api.host,
            "port": group.api_port or recipe.api.port,
        }
    )
    return recipe.model_copy(update={"nodes": nodes, "replicas": [], "cluster": cluster, "api": api})


def replicas_of(recipe: Recipe) -> list[Replica]:
    """Every replica of a fleet recipe, in the order declared (empty for a plain deployment)."""
    return [Replica(group, replica_recipe(recipe, group)) for group in recipe.replicas]


def router_node(recipe: Recipe) -> Node:
    """The node that runs the router: the one named, else the first replica's head."""
    name = recipe.router.node or recipe.replicas[0].nodes[0]
    return next(node for node in recipe.nodes if node.name == name)
