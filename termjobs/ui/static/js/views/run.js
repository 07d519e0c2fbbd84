// One run: status, timings, exit code and reason, error; its timeline and its output
// (stdout and stderr told apart) streaming live, scrolled to the end unless the reader
// scrolled up; Cancel while it is active; links to the run it retries and its retry.

import { ApiError, seg } from "../api.js";
import { h, fill, props } from "../dom.js";
import { TERMINAL, absolute, runDuration, statusBadge, timeEl } from "../format.js";
import { EventStream, liveIndicator } from "../stream.js";

/** Events whose type is the status the run moves to. */
const STATUS_EVENTS = new Set(["queued", "claimed", "running", "cancel_requested", ...TERMINAL]);

export async function runView(ctx, runId) {
  let run = await ctx.api.get(`/v2/runs/${seg(runId)}`, undefined, { signal: ctx.signal });
  let job = null;
  try {
    job = await ctx.api.get(`/v2/jobs/${seg(run.job_id)}`, undefined, { signal: ctx.signal });
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) throw error;
  }
  ctx.title(`Run ${run.id}`);
  let retryRunId = null;

  const live = liveIndicator();
  const head = h("div", { class: "page-head" });
  const problem = h("p", { class: "form-error", role: "alert", hidden: true });
  const details = h("section", { "aria-labelledby": "run-details" });
  const output = new OutputPanel();
  const timeline = h("ol", { class: "timeline", "aria-label": "Timeline" });

  fill(
    ctx.main,
    head,
    problem,
    details,
    h(
      "section",
      { "aria-labelledby": "output-title" },
      h("div", { class: "output-head" }, h("h2", { id: "output-title" }, "Output"), h("span", { class: "muted small" }, "stderr lines are marked “err” and a bar")),
      output.el,
      output.jump,
    ),
    h("section", { "aria-labelledby": "timeline-title" }, h("h2", { id: "timeline-title" }, "Timeline"), timeline),
  );

  function renderHead() {
    const active = !TERMINAL.has(run.status);
    const cancel = h("button", { type: "button", class: "danger", hidden: !active || run.status === "cancel_requested" }, "Cancel");
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      problem.hidden = true;
      try {
        run = await ctx.api.post(`/v2/runs/${seg(run.id)}/cancel`, undefined, { signal: ctx.signal });
        renderHead();
        renderDetails();
      } catch (error) {
        if (error.name === "AbortError") return;
        problem.hidden = false;
        problem.textContent = error.message;
        cancel.disabled = false;
      }
    });
    fill(
      head,
      h(
        "div",
        {},
        h("h1", {}, "Run ", h("span", { class: "mono" }, run.id)),
        h(
          "p",
          { class: "lede" },
          h("span", { id: "run-status" }, statusBadge(run.status)),
          " · job ",
          job ? h("a", { href: `#/jobs/${seg(job.id)}` }, job.name) : h("span", { class: "mono" }, `${run.job_id} (deleted)`),
          active ? [" · ", live.el] : null,
        ),
      ),
      h("div", { class: "actions" }, cancel),
    );
  }

  function renderDetails() {
    fill(
      details,
      h("h2", { id: "run-details" }, "Details"),
      props([
        ["Status", statusBadge(run.status)],
        ["Trigger", run.trigger],
        ["Attempt", String(run.attempt)],
        ["Scheduled for", absolute(run.scheduled_for)],
        ["Created", timeEl(run.created_at, { withRelative: false })],
        ["Started", run.started_at ? timeEl(run.started_at, { withRelative: false }) : "not yet"],
        ["Finished", run.finished_at ? timeEl(run.finished_at, { withRelative: false }) : ""],
        ["Duration", runDuration(run)],
        ["Exit code", run.exit_code ?? ""],
        ["Exit reason", run.exit_reason ?? ""],
        ["Error", run.error ? h("span", { class: "status bad" }, run.error) : ""],
        ["Retry of", run.retry_of ? h("a", { href: `#/runs/${seg(run.retry_of)}`, class: "mono" }, run.retry_of) : ""],
        ["Retried by", retryRunId ? h("a", { href: `#/runs/${seg(retryRunId)}`, class: "mono" }, retryRunId) : ""],
        ["Overrides", run.overrides ? h("code", {}, JSON.stringify(run.overrides)) : ""],
        ["Turns", run.turn_count ? String(run.turn_count) : ""],
        ["Tokens", run.input_tokens || run.output_tokens ? `${run.input_tokens ?? 0} in, ${run.output_tokens ?? 0} out` : ""],
        ["Session", run.session_id ? h("code", {}, run.session_id) : ""],
        ["Output", run.truncated ? "truncated (the run wrote more than the server keeps)" : ""],
      ]),
    );
  }

  function addEvent(event) {
    if (event.event_type === "output") {
      output.add(event.data?.stream ?? "stdout", event.data?.text ?? "");
      return;
    }
    if (event.event_type === "retry_scheduled" && event.data?.retry_run_id) {
      retryRunId = event.data.retry_run_id;
      renderDetails();
    }
    timeline.append(
      h(
        "li",
        { dataset: { eventType: event.event_type } },
        h("time", { datetime: event.created_at, title: absolute(event.created_at) }, clock(event.created_at)),
        h("span", { class: "etype" }, event.event_type.replaceAll("_", " ")),
        event.message ? h("span", {}, event.message) : null,
      ),
    );
    if (STATUS_EVENTS.has(event.event_type) && event.event_type !== run.status) {
      run = { ...run, status: event.event_type };
      if (event.event_type === "running" && !run.started_at) run.started_at = event.created_at;
      renderHead();
      renderDetails();
    }
  }

  async function finished() {
    try {
      run = await ctx.api.get(`/v2/runs/${seg(run.id)}`, undefined, { signal: ctx.signal });
    } catch (error) {
      ctx.report(error);
      return;
    }
    output.done();
    renderHead();
    renderDetails();
  }

  renderHead();
  renderDetails();
  // The run stream replays every stored event (the output too), then follows live,
  // and closes normally after the run's final event.
  const stream = new EventStream({
    path: `/v2/runs/${seg(run.id)}/events/stream`,
    sinceId: 0,
    token: ctx.session.token,
    onEvent: addEvent,
    onState: (state) => live.set(state),
    onEnd: () => finished(),
    onUnauthorized: ctx.expired,
  });
  stream.open();
  const ticker = setInterval(() => {
    if (!TERMINAL.has(run.status) && run.started_at) renderDetails();
  }, 1000);
  ctx.onLeave(() => {
    stream.close();
    clearInterval(ticker);
  });
}

function clock(iso) {
  const at = new Date(iso);
  const time = at.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  return `${time}.${String(at.getMilliseconds()).padStart(3, "0")}`;
}

/** The word in front of each line, by stream (program runs: stdout, stderr; llm runs:
 * the model's thinking and its response). */
const GUTTER = { stdout: "out", stderr: "err", thinking: "think", response: "reply" };

/** The output: one element per line, each with a gutter word ("out" / "err"). Sticks to
 * the end while the reader is there; once they scroll up it stays put and offers a
 * button back to the end. */
class OutputPanel {
  constructor() {
    this.el = h("div", { class: "output", tabindex: "0", role: "log", "aria-label": "Output", "aria-live": "off" });
    this.empty = h("p", { class: "empty" }, "No output yet.");
    this.el.append(this.empty);
    this.jump = h("button", { type: "button", class: "jump", hidden: true }, "↓ Jump to the latest output");
    this.jump.addEventListener("click", () => {
      this.stick = true;
      this.jump.hidden = true;
      this.el.scrollTop = this.el.scrollHeight;
    });
    this.stick = true;
    this.line = null; // the line still open (no newline yet), with its stream
    this.el.addEventListener("scroll", () => {
      const atEnd = this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight < 4;
      this.stick = atEnd;
      if (atEnd) this.jump.hidden = true;
    });
  }

  add(stream, text) {
    if (!text) return;
    this.empty.remove();
    const kind = GUTTER[stream] ? stream : "stdout";
    const parts = text.split("\n");
    parts.forEach((part, index) => {
      const last = index === parts.length - 1;
      if (last && part === "") {
        this.line = null; // the text ended with a newline
        return;
      }
      if (!this.line || this.line.kind !== kind) this.line = this.newLine(kind);
      this.line.text.append(part);
      if (!last) this.line = null;
    });
    if (this.stick) this.el.scrollTop = this.el.scrollHeight;
    else this.jump.hidden = false;
  }

  newLine(kind) {
    const text = h("span", { class: "text" });
    const line = h("div", { class: `line ${kind}`, dataset: { stream: kind } }, h("span", { class: "gutter", "aria-label": kind }, GUTTER[kind]), text);
    this.el.append(line);
    return { kind, text };
  }

  done() {
    if (this.empty.isConnected) this.empty.textContent = "The run wrote no output.";
  }
}
