// Create and edit: the form for program jobs (form.js) and an editor for the whole
// definition as JSON or YAML (editor.js). The server validates; its message names the
// field ("trigger_config.expression: ..."), and is shown beside that field.

import { ApiError, seg } from "../api.js";
import { h, fill } from "../dom.js";
import { DefinitionEditor } from "../editor.js";
import { JobForm } from "../form.js";

const READ_ONLY = ["id", "created_at", "updated_at", "next_run_at", "last_run"];

export async function editView(ctx, ref) {
  const original = ref ? await ctx.api.get(`/v2/jobs/${seg(ref)}`, undefined, { signal: ctx.signal }) : null;
  ctx.title(original ? `Edit ${original.name}` : "New job");
  const base = original ? definitionOf(original) : { name: "", runner_type: "program", runner_config: { command: "" }, trigger_type: "manual", trigger_config: {} };
  const form = new JobForm(base, { editing: Boolean(original) });
  const editor = new DefinitionEditor();
  const formError = h("div", { class: "form-error", role: "alert", hidden: true });
  const save = h("button", { type: "submit", class: "primary" }, "Save");
  const programOnly = base.runner_type !== "program";
  let mode = programOnly ? "editor" : "form";

  const tabForm = h("button", { type: "button", role: "tab", id: "tab-form", "aria-controls": "panel-form", disabled: programOnly }, "Form");
  const tabEditor = h("button", { type: "button", role: "tab", id: "tab-editor", "aria-controls": "panel-editor" }, "JSON / YAML");
  const panelForm = h("div", { role: "tabpanel", id: "panel-form", "aria-labelledby": "tab-form" }, form.el);
  const panelEditor = h("div", { role: "tabpanel", id: "panel-editor", "aria-labelledby": "tab-editor" }, editor.el);

  async function show(next) {
    formError.hidden = true;
    if (next === "editor" && mode === "form") {
      await editor.set(form.definition(base));
    } else if (next === "form" && mode === "editor") {
      let parsed;
      try {
        parsed = await editor.value();
      } catch (error) {
        editor.showError(error.message);
        return;
      }
      if (parsed.runner_type && parsed.runner_type !== "program") {
        editor.showError("The form edits program jobs only; keep editing this one here.");
        return;
      }
      form.load(parsed);
    }
    mode = next;
    tabForm.setAttribute("aria-selected", String(mode === "form"));
    tabEditor.setAttribute("aria-selected", String(mode === "editor"));
    panelForm.hidden = mode !== "form";
    panelEditor.hidden = mode !== "editor";
  }
  tabForm.addEventListener("click", () => show("form"));
  tabEditor.addEventListener("click", () => show("editor"));

  const page = h(
    "form",
    { novalidate: true, "aria-labelledby": "edit-title" },
    h("div", { class: "tabs", role: "tablist", "aria-label": "How to edit" }, tabForm, tabEditor),
    panelForm,
    panelEditor,
    formError,
    h(
      "div",
      { class: "actions" },
      save,
      h("a", { class: "button", href: original ? `#/jobs/${seg(original.id)}` : "#/" }, "Back"),
    ),
  );
  page.addEventListener("submit", async (event) => {
    event.preventDefault();
    formError.hidden = true;
    form.clearErrors();
    editor.showError("");
    let body;
    try {
      body = mode === "form" ? form.definition(base) : await editor.value();
    } catch (error) {
      editor.showError(error.message);
      return;
    }
    save.disabled = true;
    try {
      const job = original
        ? await ctx.api.patch(`/v2/jobs/${seg(original.id)}`, body, { signal: ctx.signal })
        : await ctx.api.post("/v2/jobs", body, { signal: ctx.signal });
      ctx.navigate(`#/jobs/${seg(job.id)}`, original ? `Saved “${job.name}”.` : `Created “${job.name}”.`);
    } catch (error) {
      if (error.name === "AbortError") return;
      const shown = error instanceof ApiError && error.status < 500 && (mode === "form" ? form.showError(error.message) : editor.showError(error.message));
      if (!shown) {
        formError.hidden = false;
        formError.textContent = error.message;
      }
    } finally {
      save.disabled = false;
    }
  });

  fill(
    ctx.main,
    h(
      "div",
      { class: "page-head" },
      h("div", {}, h("h1", { id: "edit-title" }, original ? `Edit “${original.name}”` : "New job"), programOnly ? h("p", { class: "lede" }, `${base.runner_type} jobs are edited as JSON or YAML.`) : null),
    ),
    page,
  );
  form.preview = (request) => ctx.api.post("/v2/schedule/preview", request, { signal: ctx.signal });
  await show(mode === "form" ? "form" : "editor");
  if (mode === "editor") await editor.set(base);
  form.refreshPreview();
  ctx.onLeave(() => form.stop());
}

/** A job's definition, without what the server keeps about it. */
function definitionOf(job) {
  const definition = { ...job };
  for (const key of READ_ONLY) delete definition[key];
  return definition;
}

