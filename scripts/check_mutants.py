#!/usr/bin/env python
"""Mutation check: does the test suite notice the bugs it is meant to catch?

For each named mutation, copy normlib/ to a temporary directory, apply the mutation by text
replacement (every pattern must be found exactly once, otherwise the script stops with an
error naming the pattern), and run the test suite with that copy first on PYTHONPATH. The
suite failing means the mutant is "killed" (good); passing means it "SURVIVED" (bad).

Tests that already fail on the unmutated package are deselected for the mutant runs (and
listed), so a pre-existing failure cannot "kill" a mutant.

    python scripts/check_mutants.py            # all mutants
    python scripts/check_mutants.py keras_momentum unbiased_forward
    python scripts/check_mutants.py --list

Exit status: 0 if every mutant was killed, 1 if any survived, 2 on a setup error.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG = ROOT / "normlib"
TESTS = ROOT / "tests"

# name -> (description, [(file relative to normlib/, old text, new text), ...])
MUTANTS = {
    "unbiased_forward": (
        "normalize with the UNBIASED variance in the forward pass (running_var kept correct)",
        [
            ("functional.py",
             "var = (x - mean).square().mean(dim=dims, keepdim=True)",
             "var = (x - mean).square().sum(dim=dims, keepdim=True) / max(x.numel() // mean.numel() - 1, 1)"),
            # the layers' fused path (eager mode) computes the variance in its own line
            ("functional.py",
             "var = square_sums.div_(m)",
             "var = square_sums.div_(max(m - 1, 1))"),
            # the batch variance is now already unbiased: store it as is, so only the forward is wrong
            ("functional.py",
             "unbiased = batch_var * (values_per_stat / max(values_per_stat - 1, 1))",
             "unbiased = batch_var"),
        ],
    ),
    "keras_momentum": (
        "Keras's momentum convention: running = m * running + (1 - m) * batch",
        [
            ("functional.py",
             "running_mean.mul_(1 - momentum).add_(batch_mean.to(running_mean.dtype), alpha=momentum)",
             "running_mean.mul_(momentum).add_(batch_mean.to(running_mean.dtype), alpha=1 - momentum)"),
            ("functional.py",
             "running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)",
             "running_var.mul_(momentum).add_(unbiased.to(running_var.dtype), alpha=1 - momentum)"),
        ],
    ),
    "biased_running_var": (
        "running_var updated with the BIASED batch variance",
        [
            ("functional.py",
             "unbiased = batch_var * (values_per_stat / max(values_per_stat - 1, 1))",
             "unbiased = batch_var"),
        ],
    ),
    "strided_groups": (
        "GroupNorm groups strided (channel c in group c % G) instead of consecutive",
        [
            ("functional.py",
             "grouped = input.reshape(batch, num_groups, channels // num_groups, *input.shape[2:])",
             "grouped = input.reshape(batch, channels // num_groups, num_groups, *input.shape[2:]).transpose(1, 2)"),
            ("functional.py",
             "per_channel = (1, num_groups, channels // num_groups) + (1,) * (input.dim() - 2)",
             "per_channel = (1, channels // num_groups, num_groups) + (1,) * (input.dim() - 2)"),
            ("functional.py",
             "    return y.reshape(input.shape)",
             "    return y.transpose(1, 2).reshape(input.shape)"),
        ],
    ),
    # A few more classic mistakes the course warns about.
    "momentum_none_ignored": (
        "momentum=None treated as 0.1 instead of a cumulative average",
        [
            ("batchnorm.py",
             "average_factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum",
             "average_factor = 0.1 if self.momentum is None else self.momentum"),
        ],
    ),
    "eval_uses_batch_stats": (
        "BatchNorm in eval normalizes with the batch statistics (forgotten eval path)",
        [
            ("batchnorm.py",
             "use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)",
             "use_batch_stats = True"),
        ],
    ),
    "half_accumulates_in_half": (
        "float16/bfloat16 statistics accumulated in half precision",
        [
            ("functional.py",
             "    if dtype in (torch.float16, torch.bfloat16):\n        return torch.float32\n",
             "    if dtype in (torch.float16, torch.bfloat16):\n        return dtype\n"),
        ],
    ),
    "rms_eps_of_input_dtype": (
        "RMSNorm eps=None uses the input dtype's epsilon (bf16: 0.0078) instead of float32's",
        [
            ("functional.py",
             "eps = torch.finfo(_compute_dtype(input.dtype)).eps",
             "eps = torch.finfo(input.dtype).eps"),
        ],
    ),
    "calls_F_layer_norm": (
        "layer_norm delegates to torch.nn.functional.layer_norm (numbers stay right; the rule is broken)",
        [
            ("functional.py",
             "    return _normalize_layer(input, dims, eps, weight, bias)[0]\n",
             "    return torch.nn.functional.layer_norm(input, shape, weight, bias, eps)\n"),
        ],
    ),
    "calls_aten_batch_norm": (
        "eval-mode batch_norm calls torch.ops.aten.native_batch_norm (bypasses every Python name)",
        [
            ("functional.py",
             "        raise RuntimeError(\"running_mean must be defined in evaluation mode (and running_var too)\")\n",
             "        raise RuntimeError(\"running_mean must be defined in evaluation mode (and running_var too)\")\n"
             "    return torch.ops.aten.native_batch_norm(input, weight, bias, running_mean, running_var, False, momentum, eps)[0]\n"),
        ],
    ),
    # ---- recurrent cells, Transformer blocks, the invariance table (chapter 6)
    "ln_lstm_no_cell_norm": (
        "LN-LSTM: tanh of the raw cell state instead of LN(c_t)",
        [("recurrent.py",
          "cell_out = c_next if self.norm_cell is None else self.norm_cell(c_next)",
          "cell_out = c_next")],
    ),
    "ln_lstm_bias_inside_norm": (
        "LN-LSTM: the input bias is added before LN_ih (LayerNorm then removes most of it)",
        [("recurrent.py",
          "        gates = TF.linear(input, self.weight_ih)\n        if self.norm_ih is not None:\n"
          "            gates = self.norm_ih(gates)\n        return gates if self.bias_ih is None else gates + self.bias_ih\n",
          "        gates = TF.linear(input, self.weight_ih, self.bias_ih)\n        if self.norm_ih is not None:\n"
          "            gates = self.norm_ih(gates)\n        return gates\n")],
    ),
    "rnn_state_runs_into_padding": (
        "LayerNormLSTM with lengths: the state keeps changing over the padding",
        [("recurrent.py",
          "state = tuple(torch.where(keep, n, s) for n, s in zip(new, state))",
          "state = new")],
    ),
    "gru_reset_gate_dropped": (
        "LN-GRU: the reset gate no longer multiplies the hidden part of the candidate",
        [("recurrent.py",
          "candidate = torch.tanh(gi_n + reset * gh_n)",
          "candidate = torch.tanh(gi_n + gh_n)")],
    ),
    "time_step_bn_shares_stats": (
        "TimeStepBatchNorm uses the statistics of step 0 at every step",
        [("recurrent.py", "            return self.steps[t]\n", "            return self.steps[0]\n")],
    ),
    "pre_ln_is_post_ln": (
        "TransformerBlock(position='pre') normalizes the residual sum (post-LN) in its attention half",
        [("transformer.py",
          "        x = x + self.attention(self.norm1(x), attn_mask, is_causal)\n",
          "        x = self.norm1(x + self.attention(x, attn_mask, is_causal))\n")],
    ),
    "invariance_ln_over_batch": (
        "the invariance table's LayerNorm normalizes over the batch (dim 0)",
        [("invariance.py",
          "    if method == \"ln\":\n        return normalize(a, dims=1, eps=eps)[0]\n",
          "    if method == \"ln\":\n        return normalize(a, dims=0, eps=eps)[0]\n")],
    ),
    "sequence_accuracy_per_sample": (
        "evaluate divides the correct labels by the number of samples, not of labels",
        [("train.py", "correct / y.numel()", "correct / x.shape[0]")],
    ),
    "ibn_halves_swapped": (
        "IBNorm batch-normalizes the FIRST channels and instance-normalizes the rest",
        [
            ("ibn.py",
             "sizes = [self.instance_channels, self.batch_channels]\n"
             "        instance_part, batch_part = torch.split(input, sizes, dim=1)\n"
             "        return torch.cat([self.IN(instance_part), self.BN(batch_part)], dim=1)",
             "sizes = [self.batch_channels, self.instance_channels]\n"
             "        batch_part, instance_part = torch.split(input, sizes, dim=1)\n"
             "        return torch.cat([self.BN(batch_part), self.IN(instance_part)], dim=1)"),
        ],
    ),
    "adain_unbiased_style_var": (
        "adain takes the style's UNBIASED variance (torch.var's default), so outputs miss the style's statistics",
        [
            ("functional.py",
             "    _, style_mean, style_var = _moments(style, dims)\n",
             "    _, style_mean, _ = _moments(style, dims)\n    style_var = style.var(dims, keepdim=True)\n"),
        ],
    ),
    "adain_style_std_without_eps": (
        "adain scales by sqrt(var_style) without eps: adain(x, x) is no longer exactly x",
        [
            ("functional.py",
             "weight=torch.sqrt(style_var + eps), bias=style_mean)",
             "weight=torch.sqrt(style_var), bias=style_mean)"),
        ],
    ),
}

DEFAULT = ["unbiased_forward", "keras_momentum", "biased_running_var", "strided_groups",
           "momentum_none_ignored", "eval_uses_batch_stats", "half_accumulates_in_half", "rms_eps_of_input_dtype",
           "calls_F_layer_norm", "calls_aten_batch_norm",
           "ln_lstm_no_cell_norm", "ln_lstm_bias_inside_norm", "rnn_state_runs_into_padding", "gru_reset_gate_dropped",
           "time_step_bn_shares_stats", "pre_ln_is_post_ln", "invariance_ln_over_batch",
           "sequence_accuracy_per_sample",
           "ibn_halves_swapped", "adain_unbiased_style_var", "adain_style_std_without_eps"]


class PatternNotFound(Exception):
    pass


def apply_mutation(pkg_dir: pathlib.Path, name: str) -> None:
    for rel, old, new in MUTANTS[name][1]:
        path = pkg_dir / rel
        if not path.exists():
            raise PatternNotFound(f"mutant {name!r}: file normlib/{rel} does not exist")
        text = path.read_text()
        count = text.count(old)
        if count != 1:
            raise PatternNotFound(
                f"mutant {name!r}: expected the pattern exactly once in normlib/{rel}, found it {count} times.\n"
                f"  pattern: {old!r}\n"
                "  normlib's source changed: update MUTANTS in scripts/check_mutants.py to the new line."
            )
        path.write_text(text.replace(old, new))


def run_suite(pkg_parent: pathlib.Path, extra_args, quiet=True):
    """Run pytest on tests/ importing normlib from pkg_parent; returns (returncode, output)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(pkg_parent) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["NORMLIB_EXPECTED_DIR"] = str(pkg_parent / "normlib")  # checked by tests/conftest.py
    env.pop("PYTEST_ADDOPTS", None)
    # cwd = pkg_parent: `python -m pytest` puts the cwd on sys.path; it must not be the repo root,
    # whose normlib/ would shadow the mutant.
    cmd = [sys.executable, "-m", "pytest", str(TESTS), "-rfE", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
           "-c", str(ROOT / "pyproject.toml"), *extra_args]
    proc = subprocess.run(cmd, cwd=pkg_parent, env=env, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def failed_ids(output: str):
    """Node ids of failed tests, relative to the repository root (as --deselect wants them;
    pytest prints them relative to the working directory, which is the temp dir)."""
    ids = []
    for line in re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.M):
        m = re.search(r"(?:^|/)(tests/.*)$", line)
        ids.append(m.group(1) if m else line)
    return ids


def imported_from(pkg_parent: pathlib.Path) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(pkg_parent)
    out = subprocess.run([sys.executable, "-c", "import normlib; print(normlib.__file__)"], cwd=pkg_parent,
                         env=env, capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mutants", nargs="*", help="names to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--count", action="store_true",
                    help="run each mutant to the end (no -x) and report how many tests kill it (slower)")
    args = ap.parse_args(argv)
    if args.list:
        for n in DEFAULT:
            print(f"{n:26s} {MUTANTS[n][0]}")
        return 0
    names = args.mutants or DEFAULT
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        print(f"error: unknown mutant(s) {unknown}; known: {', '.join(DEFAULT)}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="normlib-mutants-") as tmp:
        tmp = pathlib.Path(tmp)
        # Baseline: the unmutated copy, run the same way (also proves the copy is what is imported).
        base = tmp / "baseline"
        shutil.copytree(PKG, base / "normlib", ignore=shutil.ignore_patterns("__pycache__"))
        where = imported_from(base)
        if not where.startswith(str(base / "normlib")):
            print(f"error: the copy is not what gets imported (normlib.__file__ = {where})", file=sys.stderr)
            return 2
        # Check every pattern first, so a stale pattern is reported before any long run.
        try:
            for n in names:
                probe = tmp / f"probe-{n}"
                shutil.copytree(PKG, probe / "normlib", ignore=shutil.ignore_patterns("__pycache__"))
                apply_mutation(probe / "normlib", n)
        except PatternNotFound as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

        print("baseline: running the suite on an unmutated copy ...", flush=True)
        rc, out = run_suite(base, ["-q"])
        failing = sorted(set(failed_ids(out)))
        if rc not in (0, 1):
            print(out[-3000:])
            print(f"error: the baseline run did not complete (pytest exit {rc})", file=sys.stderr)
            return 2
        if failing:
            print(f"baseline: {len(failing)} test(s) already fail on the unmutated package; deselected below:")
            for f in failing:
                print(f"  - {f}")
        else:
            print("baseline: all tests pass")
        deselect = [a for f in failing for a in ("--deselect", f)]

        survived = []
        for n in names:
            mdir = tmp / f"probe-{n}"
            where = imported_from(mdir)
            assert where.startswith(str(mdir / "normlib")), where
            rc, out = run_suite(mdir, ["-q", *([] if args.count else ["-x"]), *deselect])
            if rc == 1:
                ids = failed_ids(out)
                detail = f"{len(ids)} failing tests" if args.count else f"first failure: {ids[0] if ids else '?'}"
                print(f"killed    {n:26s} ({MUTANTS[n][0]}) -- {detail}", flush=True)
            elif rc == 0:
                survived.append(n)
                print(f"SURVIVED  {n:26s} ({MUTANTS[n][0]})", flush=True)
            else:
                print(out[-3000:])
                print(f"error: pytest exit {rc} on mutant {n} (not a test failure)", file=sys.stderr)
                return 2
    if survived:
        print(f"\n{len(survived)} mutant(s) survived: {', '.join(survived)}")
        return 1
    print(f"\nall {len(names)} mutants killed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
