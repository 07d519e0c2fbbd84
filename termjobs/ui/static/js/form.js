// The form for program jobs: the fields of a definition, messages from the server
// beside the field they name, and the next fire times of the cron field (computed by
// the server, POST /v2/schedule/preview).

import { ApiError } from "./api.js";
import { h, fill } from "./dom.js";
import { fireTime } from "./format.js";

/** Form controls, and the definition field each one edits. Server messages start with
 * the field's path; the longest matching path decides where a message is shown. */
const PATHS = [
  ["trigger_config.expression", "expression"],
  ["trigger_config.run_at", "run_at"],
  ["trigger_config.timezone", "zone"],
  ["trigger_config", "expression"],
  ["schedule_timezone", "zone"],
  ["runner_config.command", "command"],
  ["runner_config.args", "args"],
  ["runner_config.shell", "shell"],
  ["runner_config.cwd", "cwd"],
  ["runner_config.env", "env"],
  ["runner_config", "command"],
  ["retry_policy.max_attempts", "attempts"],
  ["retry_policy.backoff", "backoff"],
  ["retry_policy.initial_delay", "initial_delay"],
  ["retry_policy.max_delay", "max_delay"],
  ["retry_policy", "attempts"],
  ["timeout_seconds", "timeout"],
  ["max_concurrent_runs", "max_runs"],
  ["concurrency_policy", "concurrency"],
  ["trigger_type", "trigger_type"],
  ["labels", "labels"],
  ["enabled", "enabled"],
  ["name", "name"],
  ["a job named", "name"],
];
/** Optional fields: left out of a new job when empty; null (back to the default) on an edit. */
const OPTIONAL = ["retry_policy", "labels", "schedule_timezone", "timeout_seconds", "max_concurrent_runs"];
const PREVIEW_COUNT = 5;

/** The form control a server message is about, or null. */
export function controlFor(message) {
  for (const [path, key] of PATHS) {
    if (message.startsWith(path) && !/[a-z_]/.test(message.charAt(path.length))) return key;
  }
  return null;
}

const lines = (text) => text.split("\n").map((line) => line.trim()).filter(Boolean);

/** A whole number typed in a field: the number; anything else is sent as typed, so the
 * server says what is wrong with it. Empty: null (the default). */
function wholeNumber(text) {
  const value = text.trim();
  if (!value) return null;
  return /^-?\d+$/.test(value) ? Number(value) : value;
}

/** "KEY=VALUE" lines as an object (labels, environment). */
function pairs(text) {
  const out = {};
  for (const line of lines(text)) {
    const at = line.indexOf("=");
    if (at < 1) return text; // sent as typed: the server explains the expected form
    out[line.slice(0, at)] = line.slice(at + 1);
  }
  return Object.keys(out).length ? out : null;
}

/** A datetime-local value (the browser's zone) as RFC 3339, and back. */
function localToIso(value) {
  if (!value) return "";
  const at = new Date(value);
  return Number.isNaN(at.getTime()) ? value : at.toISOString();
}

function isoToLocal(iso) {
  if (!iso) return "";
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())}T${pad(at.getHours())}:${pad(at.getMinutes())}`;
}

function zoneNames() {
  try {
    return ["UTC", ...Intl.supportedValuesOf("timeZone").filter((zone) => zone !== "UTC")];
  } catch {
    return ["UTC"];
  }
}

export class JobForm {
  constructor(definition, { editing }) {
    this.editing = editing;
    this.controls = {};
    this.errors = {};
    this.previewSeq = 0;
    this.timer = null;
    this.preview = null;
    this.previewList = h("ol", { class: "preview", "aria-label": "Next fire times", id: "fire-times" });
    this.previewHead = h("p", { class: "preview-head", id: "fire-times-head" });
    this.el = this.build();
    this.load(definition);
  }

  control(key, element, label, { hint, check = false } = {}) {
    element.id = `f-${key}`;
    element.name = key;
    const error = h("p", { class: "field-error", id: `e-${key}` });
    const hintEl = hint ? h("p", { class: "hint", id: `h-${key}` }, hint) : null;
    element.setAttribute("aria-describedby", [error.id, hintEl?.id].filter(Boolean).join(" "));
    this.controls[key] = element;
    this.errors[key] = error;
    const labelEl = h("label", { for: element.id }, label);
    if (check) return h("div", { class: "field" }, h("div", { class: "check" }, element, labelEl), hintEl, error);
    return h("div", { class: "field", dataset: { field: key } }, labelEl, element, hintEl, error);
  }

  build() {
    const input = (type = "text", extra = {}) => h("input", { type, autocomplete: "off", ...extra });
    const select = (options) => h("select", {}, options.map(([value, text]) => h("option", { value }, text)));
    const zones = h("datalist", { id: "zone-names" }, zoneNames().map((zone) => h("option", { value: zone })));
    const triggerType = select([
      ["manual", "manual: only when triggered"],
      ["cron", "cron: on a schedule"],
      ["once", "once: at a given time"],
    ]);
    triggerType.addEventListener("change", () => this.showTriggerFields());
    this.cronField = this.control("expression", input("text", { spellcheck: "false", placeholder: "30 2 * * *" }), "Cron expression", {
      hint: "minute hour day-of-month month day-of-week, or @daily, @hourly…",
    });
    this.cronField.append(this.previewHead, this.previewList);
    this.runAtField = this.control("run_at", input("datetime-local"), "Run at (your browser's local time)");
    this.zoneField = this.control("zone", input("text", { list: "zone-names", spellcheck: "false", placeholder: "UTC" }), "Time zone", {
      hint: "IANA name, e.g. Europe/Berlin",
    });
    const el = h(
      "div",
      {},
      h(
        "fieldset",
        {},
        h("legend", {}, "Job"),
        h(
          "div",
          { class: "grid" },
          this.control("name", input("text", { required: true }), "Name"),
          this.control("enabled", input("checkbox"), "Enabled (fires on its schedule)", { check: true }),
        ),
      ),
      h(
        "fieldset",
        {},
        h("legend", {}, "Program"),
        h(
          "div",
          { class: "grid" },
          this.control("command", input("text", { spellcheck: "false", placeholder: "/usr/local/bin/backup.sh" }), "Command"),
          this.control("args", h("textarea", { rows: "3", spellcheck: "false" }), "Arguments", { hint: "one per line" }),
          this.control("cwd", input("text", { spellcheck: "false" }), "Working directory", { hint: "empty: the server's" }),
          this.control("env", h("textarea", { rows: "3", spellcheck: "false" }), "Environment", { hint: "KEY=VALUE, one per line" }),
          this.control("shell", input("checkbox"), "Run the command through /bin/sh -c", { check: true }),
        ),
      ),
      h(
        "fieldset",
        {},
        h("legend", {}, "Trigger"),
        h(
          "div",
          { class: "grid" },
          this.control("trigger_type", triggerType, "Trigger type"),
          this.cronField,
          this.runAtField,
          this.zoneField,
          zones,
        ),
      ),
      h(
        "fieldset",
        {},
        h("legend", {}, "Limits and retries"),
        h(
          "div",
          { class: "grid" },
          this.control("timeout", input("number", { min: "1", step: "1", inputmode: "numeric" }), "Timeout (seconds)", { hint: "empty: 300" }),
          this.control("attempts", input("number", { min: "1", step: "1", inputmode: "numeric" }), "Attempts", { hint: "1 or empty: no retry" }),
          this.control("backoff", select([["fixed", "fixed"], ["linear", "linear"], ["exponential", "exponential"]]), "Backoff"),
          this.control("initial_delay", input("text", { placeholder: "10s" }), "First retry after", { hint: "e.g. 30s, 5m" }),
          this.control("max_delay", input("text", { placeholder: "5m" }), "Longest delay"),
          this.control(
            "concurrency",
            select([
              ["forbid", "forbid: one run at a time"],
              ["allow", "allow: up to the limit"],
              ["queue", "queue: wait for a free slot"],
              ["replace", "replace: cancel the running one"],
            ]),
            "Concurrency",
          ),
          this.control("max_runs", input("number", { min: "1", step: "1", inputmode: "numeric" }), "Most runs at once"),
          this.control("labels", h("textarea", { rows: "2", spellcheck: "false" }), "Labels", { hint: "key=value, one per line" }),
        ),
      ),
    );
    for (const key of ["expression", "zone", "run_at"]) {
      this.controls[key].addEventListener("input", () => this.schedulePreview());
    }
    triggerType.addEventListener("change", () => this.schedulePreview(0));
    return el;
  }

  /** Fill the form from a definition. */
  load(definition) {
    const c = this.controls;
    const config = definition.runner_config ?? {};
    const trigger = definition.trigger_config ?? {};
    const retry = definition.retry_policy ?? {};
    c.name.value = definition.name ?? "";
    c.enabled.checked = definition.enabled ?? true;
    c.command.value = config.command ?? "";
    c.args.value = (config.args ?? []).join("\n");
    c.cwd.value = config.cwd ?? "";
    c.env.value = Array.isArray(config.env) ? config.env.join("\n") : Object.entries(config.env ?? {}).map(([k, v]) => `${k}=${v}`).join("\n");
    c.shell.checked = Boolean(config.shell);
    c.trigger_type.value = definition.trigger_type ?? "manual";
    c.expression.value = trigger.expression ?? "";
    c.run_at.value = isoToLocal(trigger.run_at);
    c.zone.value = definition.schedule_timezone ?? trigger.timezone ?? "";
    c.timeout.value = definition.timeout_seconds ?? "";
    c.attempts.value = definition.retry_policy ? retry.max_attempts ?? 1 : "";
    c.backoff.value = retry.backoff ?? "fixed";
    c.initial_delay.value = retry.initial_delay ?? "";
    c.max_delay.value = retry.max_delay ?? "";
    c.concurrency.value = definition.concurrency_policy ?? "forbid";
    c.max_runs.value = definition.max_concurrent_runs ?? "";
    c.labels.value = Object.entries(definition.labels ?? {}).map(([k, v]) => `${k}=${v}`).join("\n");
    this.showTriggerFields();
    this.refreshPreview();
  }

  /** The definition the form describes, on top of ``base`` (fields the form does not
   * show, such as notify or misfire_policy, are kept as they are). */
  definition(base) {
    const c = this.controls;
    const out = structuredClone(base);
    out.name = c.name.value.trim();
    out.enabled = c.enabled.checked;
    out.runner_type = "program";
    const config = { ...(out.runner_config ?? {}) };
    config.command = c.command.value.trim();
    setOrDelete(config, "args", lines(c.args.value).length ? lines(c.args.value) : null);
    setOrDelete(config, "cwd", c.cwd.value.trim() || null);
    setOrDelete(config, "env", pairs(c.env.value));
    setOrDelete(config, "shell", c.shell.checked || null);
    out.runner_config = config;
    out.trigger_type = c.trigger_type.value;
    out.trigger_config = this.triggerConfig(base);
    out.schedule_timezone = c.zone.value.trim() || null;
    out.timeout_seconds = wholeNumber(c.timeout.value);
    out.retry_policy = this.retryPolicy();
    out.concurrency_policy = c.concurrency.value;
    out.max_concurrent_runs = wholeNumber(c.max_runs.value);
    out.labels = pairs(c.labels.value);
    for (const key of OPTIONAL) {
      if (out[key] === null && !(this.editing && key in base)) delete out[key];
    }
    return out;
  }

  triggerConfig(base) {
    const c = this.controls;
    const previous = base.trigger_type === c.trigger_type.value ? { ...(base.trigger_config ?? {}) } : {};
    delete previous.timezone; // the time zone field sets schedule_timezone, which wins anyway
    if (c.trigger_type.value === "cron") return { ...previous, expression: c.expression.value.trim() };
    if (c.trigger_type.value === "once") return { ...previous, run_at: localToIso(c.run_at.value) };
    return {};
  }

  retryPolicy() {
    const c = this.controls;
    const attempts = wholeNumber(c.attempts.value);
    if (attempts === null) return null;
    const policy = { max_attempts: attempts, backoff: c.backoff.value };
    if (c.initial_delay.value.trim()) policy.initial_delay = c.initial_delay.value.trim();
    if (c.max_delay.value.trim()) policy.max_delay = c.max_delay.value.trim();
    return policy;
  }

  showTriggerFields() {
    const type = this.controls.trigger_type.value;
    this.cronField.hidden = type !== "cron";
    this.runAtField.hidden = type !== "once";
    this.zoneField.hidden = type === "manual";
  }

  clearErrors() {
    for (const [key, error] of Object.entries(this.errors)) {
      error.textContent = "";
      this.controls[key].removeAttribute("aria-invalid");
    }
  }

  setError(key, message) {
    this.errors[key].textContent = message;
    this.controls[key].setAttribute("aria-invalid", "true");
  }

  /** Show a server message beside its field; false when it names none. */
  showError(message) {
    const key = controlFor(message);
    if (key === null) return false;
    this.setError(key, message);
    this.controls[key].focus();
    return true;
  }

  // ---- next fire times, from the server

  schedulePreview(delay = 300) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refreshPreview(), delay);
  }

  async refreshPreview() {
    if (!this.preview) return;
    const c = this.controls;
    const type = c.trigger_type.value;
    const seq = ++this.previewSeq;
    fill(this.previewList);
    this.previewHead.textContent = "";
    if (type !== "cron" || !c.expression.value.trim()) return;
    const request = { trigger_type: type, trigger_config: this.triggerConfig({}), count: PREVIEW_COUNT };
    if (c.zone.value.trim()) request.schedule_timezone = c.zone.value.trim();
    this.previewHead.textContent = "Computing the next fire times…";
    let answer;
    try {
      answer = await this.preview(request);
    } catch (error) {
      if (seq !== this.previewSeq || error.name === "AbortError") return;
      this.previewHead.textContent = "";
      const key = error instanceof ApiError ? controlFor(error.message) : null;
      if (key) this.setError(key, error.message);
      else this.previewHead.textContent = error.message;
      return;
    }
    if (seq !== this.previewSeq) return;
    for (const key of ["expression", "zone"]) {
      this.errors[key].textContent = "";
      c[key].removeAttribute("aria-invalid");
    }
    this.previewHead.textContent = answer.fire_times.length
      ? `Next ${answer.fire_times.length} fire times (${answer.timezone}):`
      : "This schedule does not fire again.";
    fill(this.previewList, answer.fire_times.map((at) => h("li", {}, h("time", { datetime: at }, fireTime(at, answer.timezone)))));
  }

  stop() {
    clearTimeout(this.timer);
  }
}

function setOrDelete(object, key, value) {
  if (value === null || value === undefined) delete object[key];
  else object[key] = value;
}
