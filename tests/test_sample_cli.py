"""`genwb sample` end to end on tiny trained runs, one per model family: every mode writes its
pictures, bad combinations are one line and exit 2, the command never loads Textual; and
training writes reconstructions of validation images for the latent models."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from tests.conftest import offline_workspace, preset_text, train_tiny
from workbench import events as ev
from workbench.cli import main
from workbench.config import load_config
from workbench.runs import Run

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {
    "made": 'name = "made"\nconditional = true\nhidden = [32]',
    "cvae": 'name = "cvae"\nconditional = true\narch = "mlp"\nhidden = 32\nlatent_dim = 4\niw_samples = 2',
    "vqvae": 'name = "vqvae"\nnum_codes = 16\ncode_dim = 4\nchannels = 8\nres_channels = 4\nres_blocks = 1',
    "vqvae_prior": 'name = "vqvae_prior"\nconditional = true\nvqvae_run = "{vqvae}"\nhidden_channels = 8\n'
                   'num_layers = 2\nhead_channels = 8\nembed_dim = 4',
}
STEPS = ["train.max_steps=4", "train.val_every=4", "train.checkpoint_every=4", "sample.every=4", "train.log_every=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny trained run per family, and the Samples events each emitted."""
    with offline_workspace(tmp_path_factory.mktemp("sample_cli")) as root:
        out, seen = {}, {}
        for name, model in FAMILIES.items():
            preset = root / f"{name}.toml"
            preset.write_text(preset_text(model.format(vqvae=out.get("vqvae", "")), name))
            seen[name] = []
            out[name] = train_tiny(preset, root / "runs", STEPS,
                                   lambda e, into=seen[name]: into.append(e) if isinstance(e, ev.Samples) else None)
        yield out, seen, root


def sample(run_dir, *args):
    return CliRunner().invoke(main, ["sample", str(run_dir), "--device", "cpu", *args])


def test_training_writes_reconstructions_for_latent_models(runs):
    paths, seen, _ = runs
    for name, run_dir in paths.items():
        recon = run_dir / "samples" / "recon-step-4.png"
        kinds = [e.kind for e in seen[name]]
        if name == "made":
            assert not recon.exists() and kinds == ["samples"]
            continue
        assert recon.exists() and kinds == ["recon", "samples"], name
        assert Image.open(recon).size == (8 * 29 + 1, 2 * 29 + 1)  # 8 validation images above their reconstructions
        event = seen[name][0]
        assert event.path == recon and event.images.shape == (16, 1, 28, 28)


@pytest.mark.parametrize("family, args, sizes", [
    ("made", ["-n", "5", "--label", "1", "--temperature", "0.8"], [(3 * 29 + 1, 2 * 29 + 1)]),
    ("made", ["-n", "4", "--mix", "0:0.5,2:0.5"], [(2 * 29 + 1, 2 * 29 + 1)]),
    ("made", ["--mode", "classes", "-n", "2"], [(10 * 29 + 1, 2 * 29 + 1)]),
    ("made", ["--mode", "progress", "-n", "3", "--every", "100", "--label", "4"], [(8 * 29 + 1, 3 * 29 + 1), None]),
    ("cvae", ["--mode", "recon", "-n", "5"], [(5 * 29 + 1, 2 * 29 + 1)]),
    ("cvae", ["--mode", "interpolate", "-n", "3", "--steps", "4", "--slerp"], [(4 * 29 + 1, 3 * 29 + 1)]),
    ("cvae", ["--mode", "classes", "-n", "1", "--mean", "--temperature", "0.5"], [(10 * 29 + 1, 29 + 1)]),
    ("cvae", ["--mean", "-n", "4", "--mix", "1,2"], [(2 * 29 + 1, 2 * 29 + 1)]),
    ("vqvae", ["--mode", "recon", "-n", "10"], [(8 * 29 + 1, 4 * 29 + 1)]),
    ("vqvae", ["--mode", "interpolate", "-n", "2"], [(9 * 29 + 1, 2 * 29 + 1)]),
    ("vqvae", ["--mode", "codes", "-n", "4", "--scale", "2"], [(2 * (8 * 29 + 1), 2 * (29 + 1)), (2 * (16 * 2 + 2), 2 * (48 + 2))]),
    ("vqvae", ["-n", "4", "--mean"], [(2 * 29 + 1, 2 * 29 + 1)]),
    ("vqvae_prior", ["--mode", "codes", "-n", "3", "--label", "2", "--temperature", "0.7"], [(6 * 29 + 1, 29 + 1), None]),
    ("vqvae_prior", ["--mode", "progress", "-n", "2", "--every", "10"], [(5 * 29 + 1, 2 * 29 + 1), None]),
    ("vqvae_prior", ["--mode", "recon", "-n", "3", "--checkpoint", "last"], [(3 * 29 + 1, 2 * 29 + 1)]),
    ("vqvae_prior", ["--mode", "classes", "-n", "1"], [(10 * 29 + 1, 29 + 1)]),
])
def test_every_mode_writes_its_pictures(runs, family, args, sizes):
    paths, _, root = runs
    out = root / "out" / f"{family}-{'-'.join(a.strip('-') for a in args)}.png"
    result = sample(paths[family], *args, "--out", str(out))
    assert result.exit_code == 0, result.output
    written = [Path(line) for line in result.stdout.splitlines()]
    assert written[0] == out and len(written) == len(sizes)
    for path, size in zip(written, sizes):
        picture = Image.open(path)
        if size:
            assert picture.size == size, path
    if "progress" in args:
        gif = Image.open(written[1])
        assert written[1].suffix == ".gif" and gif.n_frames > 2
    if "codes" in args:
        assert "codes used" in result.stderr and "perplexity" in result.stderr


def test_default_output_goes_into_the_run_folder(runs):
    paths, _, _ = runs
    result = sample(paths["cvae"], "--mode", "recon", "-n", "2")
    assert result.exit_code == 0, result.output
    (path,) = [Path(line) for line in result.stdout.splitlines()]
    assert path.parent == paths["cvae"] / "samples" and path.name.startswith("recon-") and path.exists()


def test_seed_makes_samples_reproducible(runs):
    paths, _, root = runs
    pictures = []
    for i, seed in enumerate(["3", "3", "4"]):
        out = root / f"seeded-{i}.png"
        assert sample(paths["made"], "-n", "16", "--seed", seed, "--out", str(out)).exit_code == 0
        pictures.append(out.read_bytes())
    assert pictures[0] == pictures[1] != pictures[2]


def test_temperature_reaches_the_sampler_from_the_command_line(runs):
    """Near T = 0 sampling is greedy: two seeds give the same pictures, which they do not at T = 1."""
    paths, _, root = runs
    pictures = {}
    for t in ("1", "1e-9"):
        for seed in ("0", "1"):
            out = root / f"t{t}-{seed}.png"
            assert sample(paths["made"], "-n", "9", "--label", "3", "--temperature", t, "--seed", seed, "--out", str(out)).exit_code == 0
            pictures[t, seed] = out.read_bytes()
    assert pictures["1e-9", "0"] == pictures["1e-9", "1"] and pictures["1", "0"] != pictures["1", "1"]


@pytest.mark.parametrize("family, args, words", [
    ("made", ["--mode", "interpolate"], "needs a model with an encoder"),
    ("made", ["--mode", "recon"], "needs a model with an encoder"),
    ("made", ["--mode", "codes"], "VQ-VAE"),
    ("cvae", ["--mode", "progress"], "autoregressive"),
    ("vqvae", ["--mix", "3:1"], "not class-conditional"),
    ("vqvae", ["--label", "3"], "not class-conditional"),
    ("vqvae", ["--temperature", "0.5"], "no temperature"),
    ("made", ["--temperature", "0"], "positive"),
    ("made", ["--temperature", "-2"], "positive"),
    ("made", ["--temperature", "nan"], "positive"),
    ("made", ["--mean"], "latent model"),
    ("vqvae", ["--mode", "recon", "--mean"], "always shows"),
    ("made", ["-n", "0"], "positive"),
    ("made", ["-n", "-3"], "positive"),
    ("made", ["-n", "100001"], "too many"),
    ("made", ["--label", "10"], "out of range"),
    ("made", ["--mix", "12:1"], "out of range"),
    ("made", ["--label", "1", "--mix", "1:1"], "not both"),
    ("made", ["--mix", "1:x"], "class:weight"),
    ("made", ["--mode", "progress", "--every", "0"], "--every"),
    ("made", ["--mode", "progress", "-n", "1000"], "progress"),
    ("made", ["--steps", "3"], "--steps"),
    ("made", ["--slerp"], "--slerp"),
    ("cvae", ["--mode", "interpolate", "--steps", "1"], "at least 2"),
    ("cvae", ["--mode", "recon", "-n", "61"], "test split has 60"),
    ("cvae", ["--mode", "interpolate", "-n", "31"], "at most 30 pairs"),
    ("cvae", ["--mode", "recon", "--label", "1"], "test images' own labels"),
    ("vqvae", ["--mode", "interpolate", "--slerp"], "linearly"),
    ("made", ["--out", "x.jpg"], ".png"),
    ("made", ["--mode", "paint"], "--mode"),
])
def test_bad_combinations_are_one_line_and_exit_2(runs, family, args, words):
    paths, _, _ = runs
    result = sample(paths[family], *args)
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert words in result.stderr, result.stderr


def test_a_run_without_a_checkpoint_is_one_line(runs, tmp_path):
    paths, _, _ = runs
    config = load_config(paths["made"] / "config.toml")
    empty = Run.create(config, tmp_path)
    result = sample(empty.path)
    assert result.exit_code == 2 and "no checkpoint yet" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.slow
def test_sample_never_imports_textual(runs):
    paths, _, root = runs
    code = ("import sys\nfrom workbench.cli import main\n"
            f"try:\n    main(['sample', {str(paths['cvae'])!r}, '--mode', 'recon', '-n', '2', '--device', 'cpu',"
            f" '--out', {str(root / 'sub.png')!r}])\n"
            "except SystemExit as e:\n    print('EXIT', e.code)\n"
            "print('TEXTUAL', 'textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env={**os.environ}, timeout=300)
    assert "EXIT 0" in out.stdout and "TEXTUAL False" in out.stdout, out.stdout + out.stderr


def test_default_is_the_decoder_mean_for_a_binarised_cvae_as_in_the_app(runs):
    """Issue 17: the CLI drew Bernoulli samples for a binarised CVAE while the app's session shows
    the decoder mean (sampling.default_mean). Catches a default of draws, a --no-mean that is
    ignored, and a default mean forced on a model without one (MADE) or on --mode recon."""
    import numpy as np

    paths, _, root = runs

    def picture(family, *args):
        out = root / "default-mean" / f"{family}{'-'.join(args)}.png"
        result = sample(paths[family], "-n", "4", "--seed", "1", *args, "--out", str(out))
        assert result.exit_code == 0, result.output
        return np.asarray(Image.open(out))

    default, mean, drawn = picture("cvae"), picture("cvae", "--mean"), picture("cvae", "--no-mean")
    assert np.array_equal(default, mean) and not np.array_equal(default, drawn)
    tiles = drawn[1:29, 1:29]  # the first image, inside the grid lines
    assert set(np.unique(tiles)) <= {0, 255} and len(np.unique(mean[1:29, 1:29])) > 2  # draws vs probabilities
    assert np.array_equal(picture("cvae", "--mode", "classes"), picture("cvae", "--mode", "classes", "--mean"))
    assert np.array_equal(picture("made"), picture("made", "--no-mean"))  # MADE has no mean: draws
    picture("cvae", "--mode", "recon")  # recon shows the mean anyway: the default is no --mean error
