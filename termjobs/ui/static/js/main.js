// The dashboard: sign-in, then a hash router over the views. Each view gets a context
// with the API, a way to register clean-ups (streams, timers) run when it is left, and
// an AbortSignal for its requests.

import { Api, ApiError } from "./api.js";
import { h, fill } from "./dom.js";
import { Session } from "./session.js";
import { signIn } from "./views/signin.js";
import { jobsView } from "./views/jobs.js";
import { jobView } from "./views/job.js";
import { runView } from "./views/run.js";
import { editView } from "./views/edit.js";

const main = document.getElementById("main");
const notice = document.getElementById("notice");
const signOutButton = document.getElementById("sign-out");
const session = new Session();
const api = new Api(session, () => expired());

const ROUTES = [
  [/^\/?(jobs\/?)?$/, (ctx) => jobsView(ctx)],
  [/^\/jobs\/new$/, (ctx) => editView(ctx, null)],
  [/^\/jobs\/([^/]+)\/edit$/, (ctx, id) => editView(ctx, id)],
  [/^\/jobs\/([^/]+)$/, (ctx, id) => jobView(ctx, id)],
  [/^\/runs\/([^/]+)$/, (ctx, id) => runView(ctx, id)],
];

let current = null; // the view on screen: { controller, cleanups }
let flash = ""; // a message for the next page (e.g. "Deleted job …" on the jobs view)

/** Show a message above the page (``kind``: "info" or "error"); empty hides it. */
function say(message, kind = "info") {
  notice.hidden = !message;
  notice.className = `notice ${kind}`;
  notice.textContent = message ?? "";
}

function leave() {
  if (!current) return;
  current.controller.abort();
  for (const cleanup of current.cleanups) cleanup();
  current = null;
}

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = raw.split("?");
  return { path, query: new URLSearchParams(query) };
}

async function route() {
  leave();
  say(flash);
  flash = "";
  const { path, query } = parseHash();
  const controller = new AbortController();
  const view = { controller, cleanups: [] };
  current = view;
  const ctx = {
    api,
    session,
    main,
    query,
    signal: controller.signal,
    say,
    onLeave: (fn) => view.cleanups.push(fn),
    /** Go to ``hash``; ``message`` is shown on the page it leads to. */
    navigate: (hash, message = "") => {
      flash = message;
      location.hash = hash;
    },
    title: (text) => {
      document.title = `${text} · termjobs`;
    },
    expired: () => expired(),
    /** Show a failed request's message (not when the view was left meanwhile). */
    report: (error) => {
      if (error.name !== "AbortError" && !controller.signal.aborted) showError(error, { inPlace: false });
    },
  };
  fill(main, h("p", { class: "loading" }, "Loading…"));
  for (const [pattern, render] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    try {
      await render(ctx, ...match.slice(1).map(decodeURIComponent));
    } catch (error) {
      if (error.name === "AbortError" || controller.signal.aborted) return;
      showError(error);
    }
    if (!controller.signal.aborted) focusHeading();
    return;
  }
  fill(main, h("h1", {}, "Not found"), h("p", {}, "No such page. ", h("a", { href: "#/" }, "Back to the jobs")));
}

/** After a navigation, put the keyboard focus on the new page's heading (unless the
 * view already focused a field). */
function focusHeading() {
  const heading = main.querySelector("h1");
  if (!heading || (document.activeElement && document.activeElement !== document.body)) return;
  heading.tabIndex = -1;
  heading.focus({ preventScroll: true });
}

function showError(error, { inPlace = true } = {}) {
  if (error instanceof ApiError && error.status === 401) return; // the sign-in form is on screen
  const message = error instanceof ApiError ? error.message : `unexpected error: ${error.message}`;
  if (inPlace && error instanceof ApiError && error.status === 404) {
    fill(main, h("h1", {}, "Not found"), h("p", {}, message, ". ", h("a", { href: "#/" }, "Back to the jobs")));
    return;
  }
  say(message, "error");
}

function expired() {
  leave();
  session.clear();
  showSignIn("The server did not accept the token (it may have changed). Sign in again.");
}

function showSignIn(message) {
  signOutButton.hidden = true;
  say("");
  signIn({ main, api, session, message, done: start });
}

function start() {
  signOutButton.hidden = session.open;
  route();
}

signOutButton.addEventListener("click", () => {
  leave();
  session.clear();
  showSignIn("Signed out. The token was removed from this tab.");
});

window.addEventListener("hashchange", () => {
  if (session.open || session.token) route();
});

async function boot() {
  try {
    if (session.token) {
      await api.request("GET", "/v2/jobs", { query: { limit: "1" }, token: session.token });
    } else {
      // Anonymous /healthz shows the capabilities only when no token is needed
      // (--auth none): then no sign-in is shown.
      const health = await api.request("GET", "/healthz", { token: "" });
      session.open = Array.isArray(health?.capabilities);
      if (!session.open) {
        showSignIn("");
        return;
      }
    }
    start();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      session.clear();
      showSignIn("The server did not accept the saved token. Sign in again.");
    } else {
      fill(main, h("h1", {}, "termjobs"));
      say(error.message, "error");
    }
  }
}

boot();
