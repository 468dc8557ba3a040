"""The Recipe tab: start from a shipped recipe, a blank task or a file; edit it as a form or as YAML
(each kept in step with the other), see validate's messages by field, plan it and save it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from hfadapt.core.errors import HfadaptError
from hfadapt.ui import form
from hfadapt.ui.recipe_form import form_paths, read_and_place, render_form
from hfadapt.ui.safety import confined
from hfadapt.ui.shared import Shared, attempt, validated


def recipe_sources() -> list[str]:
    from hfadapt.core.recipe import task_names
    from hfadapt.core.shipped import shipped_recipes

    return list(shipped_recipes()) + [f"blank: {t}" for t in task_names()]


def load_source(name: str) -> tuple[str, str]:
    """(YAML text, the folder its relative paths start from) of a shipped recipe or a blank task."""
    if name.startswith("blank: "):
        task = name.removeprefix("blank: ")
        return form.dump({"name": "my-run", "task": task, "model": {"name_or_path": ""}, "data": {"train_files": []}}), str(Path.cwd())
    from hfadapt.core.shipped import resolve_recipe_path

    file = resolve_recipe_path(name)
    return file.read_text(encoding="utf-8"), str(file.parent)


def _task_and_method(text: str) -> tuple[str | None, str]:
    try:
        raw = form.parse(text)
    except HfadaptError:
        return None, "lora"
    adapter = raw.get("adapter") if isinstance(raw.get("adapter"), dict) else {}
    task = raw.get("task") if isinstance(raw.get("task"), str) else None
    return task, str(adapter.get("method") or "lora")


def _top_line(placed: dict[str, list[str]]) -> str:
    return "\n\n".join(placed.get("", []))


def _set_key(path: str) -> Callable[[str, str], tuple]:
    """Set the task or the adapter method in the YAML from its dropdown."""
    def fn(value: str, text: str) -> tuple:
        raw = form.parse(text)
        form.set_value(raw, path, value or None)
        return "", form.dump(raw), value, raw.get("adapter", {}).get("method", "lora") if path == "adapter.method" else value
    return fn


def build_recipe_tab(shared: Shared) -> None:
    """The tab's components and events; sets shared.yaml_box, the recipe the Train tab launches."""
    import gradio as gr

    from hfadapt.core.recipe import adapter_methods, task_names

    ctx, base_state = shared.ctx, shared.base_state
    with gr.Tab("Recipe", id="recipe", elem_id="tab-recipe"):
        with gr.Row():
            source = gr.Dropdown(recipe_sources(), label="Start from a shipped recipe or a blank task", value=None,
                                 elem_id="recipe-source", scale=3)
            file_box = gr.Textbox(label="…or a recipe file (inside the working directory)", elem_id="recipe-file", scale=2)
            load_btn = gr.Button("Load file", elem_id="recipe-load", scale=1)
        with gr.Row():
            task_dd = gr.Dropdown(task_names(), label="task", elem_id="recipe-task", value=None)
            method_dd = gr.Dropdown(adapter_methods(), label="adapter.method", value="lora", elem_id="recipe-method")
        recipe_msg = gr.Markdown("", elem_id="recipe-status")
        task_state, method_state = gr.State(None), gr.State("lora")
        with gr.Row():
            with gr.Column(scale=3):
                form_box = gr.Column()
            with gr.Column(scale=2):
                yaml_box = gr.Textbox(label="recipe YAML", lines=28, max_lines=60, elem_id="recipe-yaml")
                errors_md = gr.Markdown("", elem_id="recipe-errors", elem_classes="field-error")
                with gr.Row():
                    plan_btn = gr.Button("Plan", elem_id="recipe-plan")
                    save_path = gr.Textbox(label="save to", placeholder="my-recipe.yaml", elem_id="recipe-save-path")
                    save_btn = gr.Button("Save", elem_id="recipe-save")
                plan_out = gr.Textbox(label="plan: parameters and memory per device", lines=8, elem_id="recipe-plan-out",
                                      interactive=False)
    shared.yaml_box = yaml_box
    loaded = [recipe_msg, yaml_box, base_state, task_dd, method_dd, task_state, method_state]

    def pick_source(name: str) -> tuple:
        text, base = load_source(name)
        task, method = _task_and_method(text)
        return "", text, base, task, method, task, method

    source.input(attempt(pick_source, 7), source, loaded)

    def load_file(typed: str) -> tuple:
        path = confined(typed, ctx.roots, "recipe file")
        if not path.is_file():
            raise HfadaptError(f"recipe file: {typed}: not found")
        text = path.read_text(encoding="utf-8")
        task, method = _task_and_method(text)
        return f"loaded {path}", text, str(path.parent), task, method, task, method

    load_btn.click(attempt(load_file, 7), file_box, loaded)
    task_dd.input(attempt(_set_key("task"), 4), [task_dd, yaml_box], [recipe_msg, yaml_box, task_state, task_state])
    method_dd.input(attempt(_set_key("adapter.method"), 4), [method_dd, yaml_box], [recipe_msg, yaml_box, method_state, method_state])

    def follow_yaml(text: str, base: str, task: str | None, method: str) -> tuple:
        new_task, new_method = _task_and_method(text)
        if new_task not in task_names():
            new_task = task
        paths = form_paths(new_task, new_method) if new_task else []
        top = _top_line(read_and_place(text, base, paths)[1])
        same = new_task == task and new_method == method
        return (top,) + ((gr.skip(),) * 4 if same else (new_task, new_method, new_task, new_method))

    yaml_box.change(follow_yaml, [yaml_box, base_state, task_state, method_state],
                    [errors_md, task_dd, method_dd, task_state, method_state], trigger_mode="always_last",
                    show_progress="hidden")

    with form_box:  # the form's place on the page: left of the YAML
        @gr.render(inputs=[task_state, method_state, yaml_box, base_state],
                   triggers=[task_state.change, method_state.change, shared.demo.load])
        def _form(task: str | None, method: str, text: str, base: str) -> None:
            render_form(task, method, text, base, yaml_box, base_state)

    def do_plan(text: str, base: str) -> str:
        from hfadapt.training.plan import format_plan, plan_recipe

        return format_plan(plan_recipe(validated(text, base, ctx)), 8)

    plan_btn.click(attempt(do_plan, 1), [yaml_box, base_state], plan_out)

    def do_save(text: str, typed: str) -> str:
        path = confined(typed, ctx.roots, "save to")
        if path.suffix not in (".yaml", ".yml"):
            raise HfadaptError(f"save to: {typed}: give a .yaml file name")
        form.parse(text)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return f"saved {path}"

    save_btn.click(attempt(do_save, 1), [yaml_box, save_path], recipe_msg)
