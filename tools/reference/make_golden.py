#!/usr/bin/python3
"""Write the golden fixture tests/data/golden.h5 from the NumPy reference.

Deterministic (fixed seeds): four small models with random parameters away
from init (glow-model.md §13), fixed pixels and dequantisation noise, and the
reference's per-example NLL, bits/dim, log-dets, log-priors and latents eps,
computed in float64 from the stored float32 values (glow-model.md §13.8).

Regenerate (Debian's python, which has numpy and h5py):
    /usr/bin/python3 tools/reference/make_golden.py tests/data/golden.h5
Check an existing file against the reference without rewriting it:
    /usr/bin/python3 tools/reference/make_golden.py --verify tests/data/golden.h5
The layout is described in tools/reference/README.md.
"""

import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import glow_ref as ref  # noqa: E402

SEED = 20240517

# name -> (config, batch, prior_unused_zero).  The `affine` case keeps random
# values in the unused part of prior/conv/W, so a C top prior that does not
# feed an all-zero input shows up; `lu_additive` zeroes it (as in any trained
# model, §9) so that, gzip-compressed, the file stays under ~300 KB.
CASES = [
    ("affine", ref.FIXTURE_CONFIGS["affine"], 3, False),
    ("lu_additive", ref.FIXTURE_CONFIGS["lu_additive"], 2, True),
    ("exp_shuffle", ref.FIXTURE_CONFIGS["exp_shuffle"], 2, False),
    ("reverse_nolt", ref.FIXTURE_CONFIGS["reverse_nolt"], 2, False),
]

INT_ATTRS = ("height", "width", "channels", "levels", "depth", "hidden")
STR_ATTRS = ("coupling", "scale_fn", "permutation")


def make_case(index, cfg, batch, prior_unused_zero):
    """Parameters, input and reference outputs of one case (all deterministic)."""
    rng = np.random.default_rng([SEED, index])
    params32 = ref.random_params(cfg, rng, prior_unused_zero=prior_unused_zero)
    shape = (batch, cfg.height, cfg.width, cfg.channels)
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    inv = 1.0 / cfg.n_bins
    noise = rng.uniform(0.0, inv, size=shape).astype(np.float32)
    # float32 rounding could reach 1/n_bins; keep u in [0, 1/n_bins).
    noise = np.minimum(noise, np.nextafter(np.float32(inv), np.float32(0)))
    x = ref.preprocess(pixels, noise, cfg.n_bits)
    out = ref.encode(x.astype(np.float64), ref.as_float64(params32), cfg)
    return params32, pixels, noise, x, out


def fixed_string(s):
    """Fixed-length ASCII (H5T_C_S1, NULLPAD): simplest to read from C."""
    return np.bytes_(s.encode("ascii"))


def write(path):
    # libver="latest" (= the v110 format with HDF5 1.10) halves the per-object
    # overhead; any HDF5 >= 1.10 reads it.
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["description"] = fixed_string(
            "flowtrain golden fixture: glow-model.md forward pass, float64 NumPy "
            "reference (tools/reference/glow_ref.py)")
        f.attrs["seed"] = np.int64(SEED)
        for index, (name, cfg, batch, unused_zero) in enumerate(CASES):
            params32, pixels, noise, x, out = make_case(index, cfg, batch, unused_zero)
            g = f.create_group(name)
            for a in INT_ATTRS:
                g.attrs[a] = np.int64(getattr(cfg, a))
            for a in STR_ATTRS:
                g.attrs[a] = fixed_string(getattr(cfg, a))
            g.attrs["learntop"] = np.int64(int(cfg.learntop))
            g.attrs["n_bits"] = np.int64(cfg.n_bits)
            g.attrs["n_bins"] = np.int64(cfg.n_bins)
            g.attrs["batch"] = np.int64(batch)
            g.attrs["dim"] = np.int64(cfg.dim)
            g.attrs["n_params"] = np.int64(ref.count_params(cfg))
            g.attrs["prior_unused_zero"] = np.int64(int(unused_zero))
            for tname, shape, kind in ref.tensor_specs(cfg):
                v = params32[tname]
                assert v.shape == shape, (tname, v.shape, shape)
                assert v.dtype == (np.int32 if kind == "buffer_i" else np.float32)
                if tname == "prior/conv/W" and unused_zero:
                    # mostly zeros: one deflate chunk (the only filtered dataset)
                    g.create_dataset("params/" + tname, data=v, chunks=v.shape,
                                     shuffle=True, compression="gzip", compression_opts=9)
                else:
                    g.create_dataset("params/" + tname, data=v)
            g.create_dataset("pixels", data=pixels)
            g.create_dataset("noise", data=noise)
            g.create_dataset("x", data=x)
            for key in ("nll", "bpd", "logdet", "logp", "objective", "eps"):
                g.create_dataset(key, data=out[key].astype(np.float64))
            g.create_dataset("trace/step_logdet", data=out["step_logdet"])
            g.create_dataset("trace/split_logp", data=out["split_logp"])
            g.create_dataset("trace/top_logp", data=out["top_logp"])


def _attr_str(v):
    return v.decode("ascii") if isinstance(v, bytes) else str(v)


def verify(path):
    """Reload the file, recompute everything from its own contents, compare."""
    bad = 0
    with h5py.File(path, "r") as f:
        for name, cfg, batch, _ in CASES:
            g = f[name]
            cfg2 = ref.Config(*(int(g.attrs[a]) for a in INT_ATTRS),
                              *(_attr_str(g.attrs[a]) for a in STR_ATTRS),
                              bool(g.attrs["learntop"]), int(g.attrs["n_bits"]))
            assert cfg2 == cfg, (cfg2, cfg)
            specs = ref.tensor_specs(cfg2)
            stored = []
            g["params"].visititems(lambda k, o: stored.append(k) if isinstance(o, h5py.Dataset) else None)
            assert sorted(stored) == sorted(s[0] for s in specs), "tensor names differ"
            p = {}
            for tname, shape, kind in specs:
                d = g["params/" + tname]
                assert d.shape == shape and d.dtype == (np.int32 if kind == "buffer_i" else np.float32)
                p[tname] = d[()]
            x = g["x"][()]
            assert np.array_equal(x, ref.preprocess(g["pixels"][()], g["noise"][()], cfg2.n_bits))
            out = ref.encode(x.astype(np.float64), ref.as_float64(p), cfg2)
            for key in ("nll", "bpd", "logdet", "logp", "objective", "eps"):
                if not np.array_equal(out[key], g[key][()]):
                    print("FAIL %s/%s differs" % (name, key))
                    bad += 1
            xr = ref.decode(g["eps"][()], ref.as_float64(p), cfg2)
            rt = np.max(np.abs(xr - x)) / np.max(np.abs(x))
            print("ok   %-13s n_params %6d  nll %s  decode(eps) rel err %.1e"
                  % (name, g.attrs["n_params"], np.array2string(g["nll"][()], precision=6), rt))
            if rt > 1e-10:
                bad += 1
    return bad


def main(argv):
    if len(argv) == 3 and argv[1] == "--verify":
        return 1 if verify(argv[2]) else 0
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    write(argv[1])
    bad = verify(argv[1])
    print("%s: %d bytes" % (argv[1], os.path.getsize(argv[1])))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
