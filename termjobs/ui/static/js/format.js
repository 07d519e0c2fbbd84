// How times, durations, statuses and triggers read on the page.

import { h } from "./dom.js";

const STATUS = {
  queued: ["◷", "info"],
  claimed: ["◔", "info"],
  running: ["▶", "info"],
  cancel_requested: ["◼", "warn"],
  succeeded: ["✓", "ok"],
  failed: ["✗", "bad"],
  timed_out: ["⊗", "bad"],
  cancelled: ["⊘", "warn"],
  skipped: ["↷", "idle"],
};

export const TERMINAL = new Set(["succeeded", "failed", "timed_out", "cancelled", "skipped"]);
export const ACTIVE = ["queued", "claimed", "running", "cancel_requested"];

/** A run status as a symbol, a word and a colour (the word alone says it all). */
export function statusBadge(status) {
  const [symbol, tone] = STATUS[status] ?? ["•", "idle"];
  return h(
    "span",
    { class: `status ${tone}`, dataset: { status } },
    h("span", { class: "sym", "aria-hidden": "true" }, symbol),
    status.replaceAll("_", " "),
  );
}

/** Whether a job fires: "enabled" or "paused", with a symbol. */
export function enabledBadge(enabled) {
  return enabled
    ? h("span", { class: "status ok", dataset: { enabled: "true" } }, h("span", { class: "sym", "aria-hidden": "true" }, "●"), "enabled")
    : h("span", { class: "status idle", dataset: { enabled: "false" } }, h("span", { class: "sym", "aria-hidden": "true" }, "‖"), "paused");
}

/** The zone a job's schedule is evaluated in. */
export function jobZone(job) {
  return job.schedule_timezone || job.trigger_config?.timezone || "UTC";
}

function formatter(options, zone) {
  try {
    return new Intl.DateTimeFormat(undefined, { ...options, timeZone: zone || undefined });
  } catch {
    return new Intl.DateTimeFormat(undefined, { ...options, timeZone: "UTC" });
  }
}

/** "2 Mar 2026, 02:30:00 CET" in the browser's zone, or in ``zone``. */
export function absolute(iso, zone) {
  if (!iso) return "";
  const options = { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" };
  return formatter(options, zone).format(new Date(iso));
}

/** "Mon 2 Mar, 02:30 CET" in ``zone``: a fire time as the schedule's zone sees it. */
export function fireTime(iso, zone) {
  const options = { weekday: "short", year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short" };
  return formatter(options, zone).format(new Date(iso));
}

const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const UNITS = [
  ["day", 86400],
  ["hour", 3600],
  ["minute", 60],
  ["second", 1],
];

/** "in 3 hours", "5 minutes ago". */
export function relative(iso, now = Date.now()) {
  const seconds = (new Date(iso).getTime() - now) / 1000;
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size || unit === "second") {
      return relativeFormat.format(Math.round(seconds / size), unit);
    }
  }
  return "";
}

/** A <time> showing relative and absolute time; refreshed by ``tickRelative``. */
export function timeEl(iso, { zone, withRelative = true } = {}) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const el = h("time", { datetime: iso, title: absolute(iso, zone) });
  if (withRelative) {
    el.dataset.relative = "true";
    el.append(h("span", { class: "rel" }, relative(iso)), h("span", { class: "sub" }, absolute(iso, zone)));
  } else {
    el.append(absolute(iso, zone));
  }
  return el;
}

/** Bring every relative time under ``root`` up to date. */
export function tickRelative(root) {
  for (const el of root.querySelectorAll("time[data-relative] .rel")) {
    el.textContent = relative(el.parentElement.getAttribute("datetime"));
  }
}

/** "850 ms", "4.2 s", "3 min 4 s", "2 h 5 min". */
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs} h ${m % 60} min`;
  return `${Math.floor(hrs / 24)} d ${hrs % 24} h`;
}

/** How long a run took (or has been running). */
export function runDuration(run) {
  if (!run?.started_at) return "";
  const end = run.finished_at ? new Date(run.finished_at).getTime() : Date.now();
  return duration(end - new Date(run.started_at).getTime());
}

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const DAY_NAMES = { SUN: 0, MON: 1, TUE: 2, WED: 3, THU: 4, FRI: 5, SAT: 6 };
const MACROS = {
  "@yearly": "0 0 1 1 *",
  "@annually": "0 0 1 1 *",
  "@monthly": "0 0 1 * *",
  "@weekly": "0 0 * * 0",
  "@daily": "0 0 * * *",
  "@midnight": "0 0 * * *",
  "@hourly": "0 * * * *",
};

const isNumber = (text) => /^\d+$/.test(text);
const pad = (n) => String(n).padStart(2, "0");

function weekdays(field) {
  const day = (text) => {
    const n = isNumber(text) ? Number(text) % 7 : DAY_NAMES[text.toUpperCase()];
    return n === undefined ? null : DAYS[n];
  };
  const parts = field.split(",").map((part) => {
    const [from, to] = part.split("-");
    if (to === undefined) return day(from);
    const [a, b] = [day(from), day(to)];
    return a && b ? `${a}–${b}` : null;
  });
  return parts.includes(null) ? null : parts.join(", ");
}

/** A cron expression in words, when it is one of the common shapes; ``null`` otherwise. */
export function cronWords(expression) {
  const text = (MACROS[expression.trim().toLowerCase()] ?? expression).trim();
  const fields = text.split(/\s+/);
  if (fields.length !== 5) return null;
  const [minute, hour, dom, month, dow] = fields;
  const everyDay = dom === "*" && month === "*";
  if (minute === "*" && hour === "*" && everyDay && dow === "*") return "every minute";
  const step = /^\*\/(\d+)$/.exec(minute);
  if (step && hour === "*" && everyDay && dow === "*") return `every ${step[1]} minutes`;
  if (!isNumber(minute)) return null;
  if (hour === "*" && everyDay && dow === "*") return `every hour at :${pad(minute)}`;
  const hourStep = /^\*\/(\d+)$/.exec(hour);
  if (hourStep && everyDay && dow === "*") return `every ${hourStep[1]} hours at :${pad(minute)}`;
  const hours = hour.split(",");
  if (!hours.every(isNumber)) return null;
  const at = `at ${hours.map((hr) => `${pad(hr)}:${pad(minute)}`).join(" and ")}`;
  if (everyDay && dow === "*") return at;
  if (everyDay) {
    const days = weekdays(dow);
    return days ? `${at} on ${days}` : null;
  }
  if (month === "*" && dow === "*" && dom.split(",").every(isNumber)) {
    return `${at} on day ${dom.split(",").join(", ")} of each month`;
  }
  return null;
}

/** A job's trigger in words: "at 02:30, Europe/Berlin", "once at ...", "manual". */
export function triggerWords(job) {
  const zone = jobZone(job);
  switch (job.trigger_type) {
    case "cron": {
      const expression = job.trigger_config?.expression ?? "";
      const words = cronWords(expression);
      return `${words ?? `cron “${expression}”`}, ${zone}`;
    }
    case "once":
      return `once, ${absolute(job.trigger_config?.run_at, zone)}`;
    default:
      return "manual (on demand)";
  }
}

/** A trigger cell: the words, and the cron expression itself below them. */
export function triggerEl(job) {
  const words = h("span", { class: "trigger" }, triggerWords(job));
  if (job.trigger_type !== "cron") return words;
  return h("span", {}, words, h("code", { class: "sub" }, job.trigger_config?.expression ?? ""));
}
