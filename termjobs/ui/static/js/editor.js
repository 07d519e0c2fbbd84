// The whole job definition as text, JSON or YAML.

import { h } from "./dom.js";

/** The whole definition as text, JSON or YAML (YAML through the vendored js-yaml,
 * loaded on first use). What is sent is always JSON. */
export class DefinitionEditor {
  constructor() {
    this.format = "json";
    this.text = h("textarea", { class: "editor", id: "f-definition", spellcheck: "false", "aria-describedby": "e-definition" });
    this.error = h("p", { class: "field-error", id: "e-definition", role: "alert" });
    const radio = (value, label) => {
      const input = h("input", { type: "radio", name: "format", value, id: `format-${value}`, checked: value === "json" });
      input.addEventListener("change", () => this.switchTo(value));
      return h("span", { class: "check" }, input, h("label", { for: input.id }, label));
    };
    this.el = h(
      "div",
      { class: "field" },
      h("div", { class: "actions", role: "radiogroup", "aria-label": "Format" }, radio("json", "JSON"), radio("yaml", "YAML")),
      h("label", { for: "f-definition" }, "Definition"),
      this.text,
      this.error,
      h("p", { class: "hint" }, "The full job definition, as in POST /v2/jobs. YAML is converted to JSON in the browser before it is sent."),
    );
  }

  async yaml() {
    this.yamlModule ??= await import("../vendor/js-yaml/js-yaml.mjs");
    return this.yamlModule;
  }

  async set(definition) {
    this.text.value = this.format === "yaml" ? (await this.yaml()).dump(definition, { lineWidth: -1 }) : JSON.stringify(definition, null, 2);
    this.showError("");
  }

  /** The definition typed, as an object; an Error naming the line when it does not parse. */
  async value() {
    const source = this.text.value;
    let value;
    if (this.format === "yaml") {
      const yaml = await this.yaml();
      try {
        value = yaml.load(source, { schema: yaml.CORE_SCHEMA });
      } catch (error) {
        throw new Error(`YAML: ${error.reason ?? error.message} (line ${(error.mark?.line ?? 0) + 1})`);
      }
    } else {
      try {
        value = JSON.parse(source);
      } catch (error) {
        throw new Error(`JSON: ${error.message}`);
      }
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error("The definition must be an object (name, runner_type, …).");
    return value;
  }

  async switchTo(format) {
    if (format === this.format) return;
    let value;
    try {
      value = await this.value();
    } catch (error) {
      this.showError(error.message);
      document.getElementById(`format-${this.format}`).checked = true;
      return;
    }
    this.format = format;
    await this.set(value);
  }

  showError(message) {
    this.error.textContent = message;
    if (message) this.text.setAttribute("aria-invalid", "true");
    else this.text.removeAttribute("aria-invalid");
    return true;
  }
}
