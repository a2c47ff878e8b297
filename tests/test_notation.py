"""The book's notation and the facts its definitions state, against the code they describe.

* The intro's notation table writes the numerical constant as $\\epsilon$ (ϵ) and keeps
  $\\varepsilon$ (ε) for Chapter 2's tolerance; a page that writes the constant as a bare
  Unicode ε in its prose shows the other glyph.
* RMSNorm's default eps is the machine epsilon of the dtype it *computes* in (float32 for
  half-precision inputs), as torch and normlib do; "of the input's dtype" was wrong there.
* BatchNorm's running_var is a running average of unbiased batch variances, not one of them.
* Chapter 1 points to the chapter that covers each running statistic.
"""

import json
from pathlib import Path

import pytest
import torch

import normlib

ROOT = Path(__file__).resolve().parent.parent


def prose(path: Path) -> str:
    """A page's prose: a notebook's markdown cells, or the Markdown file."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return path.read_text(encoding="utf-8")


def pages():
    return [
        ROOT / "intro.md",
        *sorted((ROOT / "appendices").glob("*.md")),
        *sorted((ROOT / "chapters").glob("*.ipynb")),
    ]


def test_the_constant_is_written_as_the_intro_writes_it():
    intro = prose(ROOT / "intro.md")
    assert "| $\\epsilon$ | a small constant added to the variance" in intro
    assert "Chapter 2 writes $\\varepsilon$ for a\nconvergence tolerance" in intro
    unicode_epsilon = {str(p.relative_to(ROOT)) for p in pages() if "ε" in prose(p)}
    assert not unicode_epsilon, f"pages that write the constant as a Unicode ε: {sorted(unicode_epsilon)}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_rmsnorm_default_eps_is_that_of_the_computation_dtype(dtype):
    computation = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    x = torch.full((2, 6), 1e-3, dtype=dtype)
    values = x.double()
    mean_square = values.square().mean(-1, keepdim=True)
    for library in (torch.nn, normlib):
        with torch.no_grad():
            out = library.RMSNorm(6).to(dtype)(x).double()
        expected = values * torch.rsqrt(mean_square + torch.finfo(computation).eps)
        torch.testing.assert_close(out, expected, atol=1e-2, rtol=0)
        if dtype != computation:  # the input's own epsilon would give a far smaller output
            wrong = values * torch.rsqrt(mean_square + torch.finfo(dtype).eps)
            assert (out - wrong).abs().min() > 0.3


def test_pages_state_the_computation_dtype_for_rmsnorm_eps():
    for path in (ROOT / "intro.md", ROOT / "appendices" / "glossary.md", ROOT / "chapters" / "01_one_recipe.ipynb"):
        text = " ".join(prose(path).split())
        assert "epsilon of the input's dtype" not in text, path.name
        assert "machine epsilon of the dtype it computes in" in text, path.name
        assert "float32 for float16 and bfloat16 inputs" in text, path.name


def test_running_var_is_a_blend_and_the_glossary_says_so():
    bn = torch.nn.BatchNorm1d(3)
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    bn(x)
    unbiased = x.var(0, correction=1)
    torch.testing.assert_close(bn.running_var, 0.9 * torch.ones(3) + 0.1 * unbiased)
    assert (bn.running_var - unbiased).abs().max() > 0.1  # not the unbiased variance itself
    glossary = " ".join(prose(ROOT / "appendices" / "glossary.md").split())
    assert "stores the unbiased one" not in glossary
    assert "blends the batch's unbiased variance into `running_var`" in glossary


def test_chapter_1_points_to_the_chapters_that_cover_each_running_statistic():
    """Chapter 1's variance paragraph: BatchNorm's running_var -> Chapter 5, InstanceNorm's
    (track_running_stats=True) -> Chapter 7, and the update rule with momentum written out."""
    text = " ".join(prose(ROOT / "chapters" / "01_one_recipe.ipynb").split())
    start = text.index("In `eval()` mode BatchNorm")
    paragraph = text[start : text.index("After {eq}`eq-standardize`", start)]
    batchnorm, instancenorm = paragraph.split("for InstanceNorm's")
    assert "Chapter 5" in batchnorm and "Chapter 7" not in batchnorm
    assert "Chapter 7" in instancenorm and "Chapter 5" not in instancenorm
    assert "track_running_stats" in (ROOT / "chapters" / "07_instancenorm.ipynb").read_text(encoding="utf-8")
    assert "running_var" in (ROOT / "chapters" / "05_batchnorm_inference.ipynb").read_text(encoding="utf-8")
    # momentum appears first in the update rule that defines it
    rule = "\\mathrm{running\\_var} \\leftarrow (1-\\alpha)\\,\\mathrm{running\\_var} + \\alpha\\, s^2"
    assert rule in paragraph and paragraph.index(rule) < paragraph.index("momentum")
