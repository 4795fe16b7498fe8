"""One rank of FlashSpark's fabric check: torch.distributed all-reduce, timed per message size.

Sent to the engine's own Python on each node (`python - ADDR PORT RANK WORLD BACKEND TIMEOUT SIZES`)
with the node's rendered environment (GLOO_SOCKET_IFNAME / NCCL_* as vLLM would get them). Prints
one JSON object on stdout whatever happens: the stage that failed and torch's message, or the
timings. Standard library and torch only; nothing of FlashSpark's is installed on a node.
"""

import json
import os
import socket
import statistics
import sys
import time
from datetime import timedelta


def main() -> None:
    addr, port, rank, world, backend, timeout_s, sizes = sys.argv[1:8]
    out = {"rank": int(rank), "host": socket.gethostname(), "ok": False, "stage": "import", "results": []}
    out["ifname"] = os.environ.get("NCCL_SOCKET_IFNAME" if backend == "nccl" else "GLOO_SOCKET_IFNAME")
    try:
        import torch
        import torch.distributed as dist

        out["torch"] = torch.__version__
        device = "cpu"
        if backend == "nccl":
            out["nccl"] = ".".join(str(part) for part in torch.cuda.nccl.version())
            device = "cuda:0"
            torch.cuda.set_device(0)
        out["stage"] = "rendezvous"
        started = time.perf_counter()
        dist.init_process_group(
            backend,
            init_method=f"tcp://{addr}:{port}",
            rank=int(rank),
            world_size=int(world),
            timeout=timedelta(seconds=float(timeout_s)),
        )
        out["rendezvous_s"] = round(time.perf_counter() - started, 3)
        out["stage"] = "all-reduce"
        for size in (int(s) for s in sizes.split(",")):
            tensor = torch.ones(max(size // 4, 1), dtype=torch.float32, device=device)
            iters = 20 if size <= 1 << 20 else 5
            times = []
            for step in range(iters + 3):  # three warm-up rounds: connections, allocator
                dist.barrier()
                if device != "cpu":
                    torch.cuda.synchronize()
                begin = time.perf_counter()
                dist.all_reduce(tensor)
                if device != "cpu":
                    torch.cuda.synchronize()
                if step >= 3:
                    times.append(time.perf_counter() - begin)
            expected = float(int(world)) ** (iters + 3)
            if abs(float(tensor[0]) - expected) > 1e-3 * expected:
                raise RuntimeError(f"all-reduce returned {float(tensor[0])}, expected {expected}")
            out["results"].append(
                {
                    "bytes": tensor.numel() * 4,
                    "iterations": iters,
                    "p50_us": round(statistics.median(times) * 1e6, 1),
                    "max_us": round(max(times) * 1e6, 1),
                }
            )
        dist.destroy_process_group()
        out["ok"] = True
        out["stage"] = "done"
    except BaseException as error:
        out["error"] = f"{type(error).__name__}: {error}"[-2000:]
    print(json.dumps(out), flush=True)


main()
