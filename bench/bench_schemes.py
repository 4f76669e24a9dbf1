"""Milliseconds per password verification for every scheme proxyd can generate.

Usage: python bench/bench_schemes.py [SECONDS_PER_SCHEME]

Each scheme's hash is made with proxyd's own ``hash_password`` (Dovecot's
default rounds), then verified repeatedly, single-threaded, for about the given
time (default 0.3 s).  The target for SHA512-CRYPT at 5,000 rounds is < 15 ms.
"""

from __future__ import annotations

import sys
import time

from proxyd.auth import crypt_ffi, schemes


def bench(scheme: str, budget: float) -> tuple[float, int]:
    stored = schemes.hash_password("benchmark-password", scheme, user="user@example.com")
    count = 0
    start = time.perf_counter()
    while True:
        if not schemes.verify("benchmark-password", stored, "PLAIN", "user@example.com"):
            raise SystemExit(f"{scheme}: verification failed")
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget and count >= 3:
            return elapsed * 1000 / count, count


def main() -> None:
    budget = float(sys.argv[1]) if len(sys.argv) > 1 else 0.3
    backend = "libcrypt (ctypes)" if crypt_ffi.available() else "libpass fallback"
    print(f"crypt backend: {backend}")
    print(f"{'scheme':<16} {'ms/verify':>10} {'runs':>6}")
    for scheme in schemes.generatable_schemes():
        ms, runs = bench(scheme, budget)
        print(f"{scheme:<16} {ms:>10.3f} {runs:>6}")


if __name__ == "__main__":
    main()
