"""What the tabs of `hfadapt ui` share: the runs folder and its job manager (Context), the components
one tab reads from another (Shared), and the error handling every action goes through (attempt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.ui import form
from hfadapt.ui.jobs import Jobs
from hfadapt.ui.safety import confined

if TYPE_CHECKING:
    import gradio as gr

THIS_MACHINE = "hfadapt train (this process, no launcher)"


def error_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename:
        return f"hfadapt: error: {e.filename}: {e.strerror or e}"
    return f"hfadapt: error: {first_line(e) if not isinstance(e, HfadaptError) else str(e)}"


def attempt(fn: Callable[..., Any], outputs: int) -> Callable[..., Any]:
    """Run an action; on failure, its error line in the first output and nothing else changed."""
    import gradio as gr

    def wrapped(*args: Any) -> Any:
        try:
            return fn(*args)
        except (HfadaptError, OSError, ValueError) as e:
            line = error_line(e)
            return (line,) + (gr.skip(),) * (outputs - 1) if outputs > 1 else line
    return wrapped


@dataclass
class Context:
    runs: Path
    jobs: Jobs

    @property
    def roots(self) -> list[Path]:
        return [Path.cwd().resolve(), self.runs.resolve()]

    def run_names(self) -> list[str]:
        from hfadapt.insight.runs import find_runs

        if not self.runs.is_dir():
            return []
        return [str(p.relative_to(self.runs)) if p != self.runs else p.name for p in find_runs(self.runs)]

    def run_path(self, name: str | None) -> Path:
        if not name:
            raise HfadaptError("choose a run first")
        path = confined(str(self.runs / name), self.roots, "run")
        if not (path / "recipe.yaml").is_file():
            raise HfadaptError(f"{name}: not a run under {self.runs}")
        return path


def launchers() -> dict[str, Path | None]:
    """The Accelerate configs of examples/launch (the repository's, or the working directory's)."""
    out: dict[str, Path | None] = {THIS_MACHINE: None}
    for folder in (Path.cwd() / "examples" / "launch", Path(__file__).resolve().parents[2] / "examples" / "launch"):
        for f in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            out.setdefault(f"accelerate launch --config_file examples/launch/{f.name}", f)
    return out


def validated(text: str, base: str, ctx: Context) -> Any:
    """The recipe of the YAML box, ready to train: valid, and its output folder inside the allowed ones."""
    recipe, problems = form.check(text, Path(base))
    if problems:
        raise HfadaptError("; ".join(problems))
    if recipe.output.dir:
        confined(recipe.output.dir, ctx.roots, "output.dir")
    else:
        recipe.output.dir = str(ctx.runs.resolve() / recipe.run_name)
    return recipe


@dataclass
class Shared:
    """The page's state across tabs: the Recipe tab fills in its YAML box, and every tab adds its
    run pickers, which the page refreshes together."""

    ctx: Context
    demo: gr.Blocks
    base_state: gr.State  # the folder the recipe's relative paths start from
    launch_choices: dict[str, Path | None]
    yaml_box: gr.Textbox | None = None
    run_pickers: list[gr.Dropdown] = field(default_factory=list)

    def run_picker(self, **kwargs: Any) -> gr.Dropdown:
        """A dropdown of the runs under the runs folder, kept fresh by the page."""
        import gradio as gr

        picker = gr.Dropdown(self.ctx.run_names(), **kwargs)
        self.run_pickers.append(picker)
        return picker
