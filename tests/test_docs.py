"""The documentation the code cites exists, and says what the code cites it for.

* Every ``docs/....md`` path named in the code (docstrings, comments, messages), the tests, the
  benchmarks, the notebooks and the README exists, and every ``#anchor`` on such a reference (and
  on the links between the docs pages) names a heading of that page.
* No reference to design notes outside the repository is left in the code.
* Each theory page states the formulas that the code cites it for (a list kept here, checked
  against the text of the page).
* The site builds with ``mkdocs build --strict`` (when the ``docs`` extra is installed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("meanfield", "particles", "validation", "tests", "benchmarks", "notebooks")
CITATION = re.compile(r"docs/[A-Za-z0-9_-][A-Za-z0-9_/.-]*?\.md(?:#[A-Za-z0-9_-]+)?")


def code_files() -> list[Path]:
    return [p for d in CODE_DIRS for p in sorted((ROOT / d).rglob("*.py"))]


def citations() -> dict[str, set[str]]:
    """{cited 'docs/...md[#anchor]': files citing it} over the code and the README."""
    out: dict[str, set[str]] = {}
    for path in code_files() + [ROOT / "README.md"]:
        for ref in CITATION.findall(path.read_text(encoding="utf-8")):
            out.setdefault(ref, set()).add(str(path.relative_to(ROOT)))
    return out


def slug(title: str) -> str:
    """Heading id as Python-Markdown's ``toc`` extension makes it (MkDocs' default)."""
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    """Ids of the headings of a Markdown page (outside fenced code)."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M)}


def test_code_cites_docs():
    cited = citations()
    assert any(ref.startswith("docs/theory/") for ref in cited), "no docs citations found"
    pages = {ref.split("#")[0] for ref in cited}
    for page in ("docs/theory/model.md", "docs/theory/limits.md", "docs/theory/wang-ma.md",
                 "docs/architecture.md"):
        assert page in pages


def test_cited_docs_exist_with_their_anchors():
    problems = []
    for ref, files in sorted(citations().items()):
        page, _, anchor = ref.partition("#")
        path = ROOT / page
        if not path.is_file():
            problems.append(f"{ref} (cited in {sorted(files)}) does not exist")
        elif anchor and anchor not in anchors(path):
            problems.append(f"{ref} (cited in {sorted(files)}): no heading with id {anchor!r}")
    assert not problems, "\n".join(problems)


def test_links_between_docs_pages_resolve():
    problems = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://", target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            if not dest.exists():
                problems.append(f"{page.relative_to(ROOT)}: {target} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{page.relative_to(ROOT)}: {target}: no such heading")
    assert not problems, "\n".join(problems)


def test_no_external_design_references():
    hits = [str(p.relative_to(ROOT)) for p in code_files()
            if p.name != "test_docs.py" and re.search(r"\bDESIGN\b", p.read_text(encoding="utf-8"))]
    assert not hits, f"references to external design notes: {hits}"


# Formulas (as written in the code's docstrings) that each page must state.
COVERS = {
    "docs/theory/model.md": [
        "f(x) = (1/m) sum", "x~ = (x, 1)", "bias is the **last** component",
        "-m grad_{theta_k} R", "Psi(a, w; mu)", "R = sum_i weight_i l(f(x_i), y_i)",
        "da/dt = -w . G", "dw/dt = -a G", "(f - y)^2 / 2", "exp(-y f)", "log(1 + exp(-y f))",
        "t_paper = alpha t", "sqrt(m/alpha)", "fold_in", "ASI", "Filippov",
    ],
    "docs/theory/phase-diagram.md": [
        "kappa  = beta1 beta2 / alpha", "kappa' = beta1 / beta2",
        "sigma_a = m^((1 - gamma - gamma')/2)", "sigma_w = m^((1 - gamma + gamma')/2)",
        "gamma = 1 + gamma'", "RD(theta_w)", "S_w", "atan2(b, w)", "m^(gamma - 1)",
        "{-1/2, -1/6, 1/6, 1/2}",
    ],
    "docs/theory/limits.md": [
        "k0(x, x') = (pi - theta) / (2 pi)",
        "k1(x, x') = |x~| |x~'| (sin theta + (pi - theta) cos theta) / (2 pi)",
        "**c = 1**", "exp(-K_XX t / n)", "d_t mu_s = -div_S(mu_s s grad_S g) + 2 s g mu_s",
        "d|a|/dt = s r g(u)", "s grad_S g(u)", "dphi/dt = s g'(phi)", "g0(u) = sum_i weight_i y_i relu(u . x~_i)",
        "extremal vectors", "(gamma - 1) / (2 g0*)", "arXiv 1803.08367", "m^-1/2", "Sobol",
    ],
    "docs/theory/wang-ma.md": [
        "mu       ~ p x_+ - x_-", "x_-perp  = (x_+ - cos D x_-) / sin D",
        "x_+perp  = (x_- - cos D x_+) / sin D", "n2 = (p - cos D) x_- - (p cos D - 1) x_+",
        "u . x_+ > 0", "rho_+ = 1/4", "(4 pi)", "p cos(Delta) > 1", "2 sqrt(p) / (1 + p)",
        "t_esc = 2 (1 + p) (1 - p^(-1/2)) / ((rho_+ + rho_-) Delta^2)",
        "df_+/dt = rho_+ (g_+ - g_- cos D)", "rho_- g_- sin^2 D", "cos theta = 0.99",
        "t = 10", "leading order in Delta", "not the flow",
    ],
    "docs/theory/boursier.md": [
        "D_+ = (1/n) sum_{k: y_k > 0} y_k x_k", "ln(1/lambda) / |D_+-|",
        "L0 = (1/2n) sum_k y_k^2", "beta_+- = sum_{k in class +-} |y_k| x_k / |x_k|^2",
        "(1/m) sum_k |a_k| |w_k|", "|beta_+| + |beta_-|", "lambda = 1e-6", "2^(class size)",
    ],
    "docs/theory/analytic.md": [
        "arXiv 2304.02972", "(ridge / 2) |W - W_prev|^2", "A[i, (k, j)] = (1/m) a_k s_ik x~_ij",
        "Pattern refresh", "best iterate", "leak",
    ],
    "docs/theory/integrator.md": [
        "hyperbolic rotation", "expm1", "Filippov", "(R0 + R1)/2", "Magnus",
        "err = max_i |R2_i - R1_i|", "second* nearest face", "max_growth",
    ],
    "docs/architecture.md": [
        "meanfield.particles  <-  meanfield  <-  meanfield.validation", "lax.while_loop",
        "checkpoint", "run_sweep",
    ],
}


@pytest.mark.parametrize("page", sorted(COVERS))
def test_page_states_the_cited_formulas(page):
    text = (ROOT / page).read_text(encoding="utf-8")
    missing = [phrase for phrase in COVERS[page] if phrase not in text]
    assert not missing, f"{page} lacks {missing}"


def test_every_theory_page_is_in_the_site_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs" / "theory").glob("*.md")):
        assert f"theory/{page.name}" in nav, page.name


def test_site_builds_strict(tmp_path):
    """``mkdocs build --strict`` (warnings are errors) into a temporary directory."""
    pytest.importorskip("mkdocstrings_handlers.python", reason="needs the docs extra")
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    assert mkdocs, "the docs extra is installed but the mkdocs command is not on PATH"
    result = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "site" / "theory" / "wang-ma" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "particles" / "index.html").is_file()


def test_the_loop_of_your_own_reproduces_simulate():
    """The example of docs/api/particles.md runs, and its losses are simulate's (the page says
    so: to rounding, with the same step count)."""
    import numpy as np

    import meanfield as mf

    page = (ROOT / "docs" / "api" / "particles.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", page, re.S | re.M)
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0], "docs/api/particles.md", "exec"), namespace)
    run = mf.simulate(namespace["config"], progress=False)
    np.testing.assert_allclose(namespace["losses"], run.loss.values, rtol=1e-12, atol=0)
    assert int(namespace["state"].n_steps) == int(run.n_steps[-1])
