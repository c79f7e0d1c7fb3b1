"""Benchmark: workbench.metrics.frechet_distance against the scipy.linalg.sqrtm route.

    python benchmarks/bench_fid.py              d in {64, 512, 2048}, median of 3 repeats
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_fid.py --repeats 5
                                                the figures in the README: on a shared CPU
                                                only single-threaded BLAS gives stable times
    python benchmarks/bench_fid.py --quick      d in {64, 512}, one repeat
    python benchmarks/bench_fid.py --reference  also the reference figures of the evaluation:
                                                real test vs real train (floor) and vs uniform
                                                noise (ceiling), classifier features, Fashion-MNIST
                                                (--binarize dynamic: in the binarised domain)

The covariance pairs have a known answer: S1 = Q diag(a) Q^T and
S2 = S1^(-1/2) U diag(b) U^T S1^(-1/2) with random rotations Q, U and spectra a, b spread over
three decades, so that S1^(1/2) S2 S1^(1/2) = U diag(b) U^T does not commute with S1 and
tr((S1 S2)^(1/2)) = sum(sqrt(b)) exactly. Relative errors are given for the whole distance and
for the trace term each route computes, against the float64 values built from this exact trace. Writes benchmarks/results/fid.json
(and fid_reference.json with --reference).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import scipy.linalg

from workbench.metrics import frechet_distance

RESULTS = Path(__file__).resolve().parent / "results"


def known_answer_pair(d: int, seed: int = 0):
    """(mu1, S1, mu2, S2, exact distance, exact tr((S1 S2)^(1/2))) for a non-commuting pair with a known trace term."""
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    u = np.linalg.qr(rng.standard_normal((d, d)))[0]
    a = 10 ** rng.uniform(-3, 0, d)
    b = 10 ** rng.uniform(-3, 0, d)
    s1 = (q * a) @ q.T
    inv_sqrt_s1 = (q / np.sqrt(a)) @ q.T
    s2 = inv_sqrt_s1 @ ((u * b) @ u.T) @ inv_sqrt_s1
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    mu1, mu2 = rng.standard_normal(d) * 0.1, rng.standard_normal(d) * 0.1
    diff = mu1 - mu2
    trace_sqrt = np.sqrt(b).sum()
    exact = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    return mu1, s1, mu2, s2, float(exact), float(trace_sqrt)


def frechet_distance_sqrtm(mu1, s1, mu2, s2) -> float:
    """The usual route (pytorch-fid): scipy.linalg.sqrtm of the non-symmetric product."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


def trace_term(fid: float, mu1, s1, mu2, s2) -> float:
    """tr((S1 S2)^(1/2)) read back from a distance, to compare the part each route computes."""
    diff = mu1 - mu2
    return float((diff @ diff + np.trace(s1) + np.trace(s2) - fid) / 2)


def timed(fn, repeats: int):
    fn()  # warm-up (BLAS threads, page faults)
    times, value = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), value


def bench_distances(dims, repeats: int) -> list[dict]:
    rows = []
    for d in dims:
        mu1, s1, mu2, s2, exact, exact_trace = known_answer_pair(d)
        ours_s, ours = timed(lambda: frechet_distance(mu1, s1, mu2, s2), repeats)
        # sqrtm is slow at d=2048: one timed run after the warm-up is enough to see the gap.
        ref_s, ref = timed(lambda: frechet_distance_sqrtm(mu1, s1, mu2, s2), repeats if d < 2048 else 1)
        rows.append({"d": d, "fid": exact, "ours_s": ours_s, "sqrtm_s": ref_s, "speedup": ref_s / ours_s,
                     "ours_rel_err": abs(ours - exact) / exact, "sqrtm_rel_err": abs(ref - exact) / exact,
                     "ours_trace_rel_err": abs(trace_term(ours, mu1, s1, mu2, s2) - exact_trace) / exact_trace,
                     "sqrtm_trace_rel_err": abs(trace_term(ref, mu1, s1, mu2, s2) - exact_trace) / exact_trace})
    return rows


def print_distance_table(rows: list[dict]) -> None:
    print("| d | frechet_distance | sqrtm route | speed-up | rel. error FID (ours / sqrtm) "
          "| rel. error tr((S1 S2)^1/2) (ours / sqrtm) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['d']} | {r['ours_s'] * 1e3:.1f} ms | {r['sqrtm_s'] * 1e3:.1f} ms | {r['speedup']:.1f}x | "
              f"{r['ours_rel_err']:.1e} / {r['sqrtm_rel_err']:.1e} | "
              f"{r['ours_trace_rel_err']:.1e} / {r['sqrtm_trace_rel_err']:.1e} |")


def print_reference_table(ref: dict) -> None:
    print(f"\nReference figures: {ref['dataset']} (binarize {ref['binarize']}, {ref['levels']} levels), "
          f"{ref['extractor_label']}, n = {ref['n']} against the {ref['real_images']} test images")
    print("| comparison | FID | KID (x1e3) | IS | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, label in (("floor", "real test vs real train (floor)"), ("ceiling", "real test vs uniform noise (ceiling)")):
        r = ref[key]
        print(f"| {label} | {r['fid']:.3f} | {r['kid_mean'] * 1e3:.3f} ± {r['kid_std'] * 1e3:.3f} | "
              f"{r['is_mean']:.3f} ± {r['is_std']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} |")
    print(f"| IS of the real test set itself | | | {ref['real_is_mean']:.3f} ± {ref['real_is_std']:.3f} | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d in {64, 512}, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference", action="store_true", help="also measure the reference figures")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("-n", type=int, default=10000)
    parser.add_argument("--binarize", default="none", choices=["none", "threshold", "dynamic"])
    parser.add_argument("--levels", type=int, default=256)
    args = parser.parse_args()
    dims, repeats = ((64, 512), 1) if args.quick else ((64, 512, 2048), args.repeats)

    rows = bench_distances(dims, repeats)
    print_distance_table(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    blas_threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default"
    (RESULTS / "fid.json").write_text(json.dumps({"repeats": repeats, "blas_threads": blas_threads, "rows": rows},
                                                 indent=2) + "\n")

    if args.reference:
        from workbench.evaluate import reference_figures

        levels = 2 if args.binarize != "none" else args.levels
        ref = reference_figures(args.dataset, n=args.n, binarize=args.binarize, levels=levels)
        print_reference_table(ref)
        suffix = "" if args.binarize == "none" and levels == 256 else f"-{args.binarize}-L{levels}"
        (RESULTS / f"fid_reference{suffix}.json").write_text(json.dumps(ref, indent=2) + "\n")


if __name__ == "__main__":
    main()
