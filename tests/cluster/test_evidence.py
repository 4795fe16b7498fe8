"""Boot evidence from real vLLM logs (recorded here) and the log forms of other vLLM versions."""

from __future__ import annotations

from pathlib import Path

from flashspark.bootlog import parse_boot_log

RECORDED = (Path(__file__).parents[1] / "cases" / "vllm" / "boot_local_cpu.log").read_text()


def test_recorded_vllm_cpu_boot() -> None:
    # The recorded log says: "CPU KV cache size: 46,592 tokens, Maximum concurrency for
    # 8,192 tokens per request: 5.69x" and "init engine ... took 3.29 s" (vLLM 0.32.0).
    boot = parse_boot_log(RECORDED)
    assert boot.kv_cache_tokens == 46_592 and boot.kv_cache_device == "CPU"
    assert boot.max_concurrency == 5.69 and boot.max_concurrency_for_tokens == 8192
    assert boot.engine_init_s == 3.29
    assert boot.vllm_version == "0.32.0"
    assert boot.available_kv_cache_gib == 1.0
    assert boot.startup_complete


def test_two_line_gpu_form_of_older_vllm() -> None:
    log = (
        "INFO [gpu_worker.py:1] Available KV cache memory: 14.48 GiB\n"
        "INFO [kv_cache_utils.py:2] GPU KV cache size: 2,044,166 tokens\n"
        "INFO [kv_cache_utils.py:3] Maximum concurrency for 1,048,576 tokens per request: 1.95x\n"
    )
    boot = parse_boot_log(log)
    assert (boot.kv_cache_tokens, boot.max_concurrency, boot.available_kv_cache_gib) == (2_044_166, 1.95, 14.48)
    assert boot.kv_cache_device == "GPU" and not boot.startup_complete


def test_the_last_boot_of_a_reused_log_wins() -> None:
    log = "GPU KV cache size: 1,000 tokens\nGPU KV cache size: 2,000 tokens\n"
    assert parse_boot_log(log).kv_cache_tokens == 2000


def test_a_log_without_boot_lines_gives_empty_evidence() -> None:
    boot = parse_boot_log("Traceback (most recent call last):\n  RuntimeError: boom\n")
    assert boot.kv_cache_tokens is None and boot.max_concurrency is None and boot.vllm_version is None
