// Sign-in: the token is checked against the server before it is kept.

import { ApiError } from "../api.js";
import { h, fill, uid } from "../dom.js";

export function signIn({ main, api, session, message, done }) {
  document.title = "Sign in · termjobs";
  const inputId = uid("token");
  const input = h("input", { id: inputId, type: "password", name: "token", autocomplete: "off", required: true, spellcheck: "false" });
  const problem = h("p", { class: "form-error", role: "alert", hidden: true });
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { novalidate: true, "aria-label": "Sign in" },
    h("label", { for: inputId }, "Token"),
    input,
    problem,
    h("div", { class: "actions" }, button),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      showProblem("Enter the token the server printed when it started.");
      return;
    }
    button.disabled = true;
    try {
      await api.request("GET", "/v2/jobs", { query: { limit: "1" }, token });
      session.keep(token);
      session.open = false;
      done();
    } catch (error) {
      showProblem(
        error instanceof ApiError && error.status === 401
          ? "The server refused this token (invalid authentication credentials). Check it and try again."
          : error.message,
      );
    } finally {
      button.disabled = false;
    }
  });

  function showProblem(text) {
    problem.hidden = false;
    problem.textContent = text;
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }

  fill(
    main,
    h(
      "section",
      { class: "signin" },
      h("h1", {}, "Sign in"),
      message ? h("p", { class: "muted", role: "status" }, message) : null,
      h(
        "p",
        {},
        "Paste the bearer token of this server: the one it printed at start (",
        h("code", {}, "token: …"),
        "), or the one it was started with (",
        h("code", {}, "--token"),
        " or ",
        h("code", {}, "TERM_LLM_SERVE_TOKEN"),
        "). It is kept in this browser tab only, until you sign out or close the tab.",
      ),
      form,
    ),
  );
  input.focus();
}
