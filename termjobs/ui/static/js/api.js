// The REST API, with the session's token. Paths are relative to the server root, found
// from this page's own address (the page lives at <root>/ui/), so a server behind a
// path prefix works too.

export const ROOT = new URL("..", document.baseURI);

/** An answer that was not a success: the server's own message, or why there was none. */
export class ApiError extends Error {
  constructor(status, message, type = "") {
    super(message);
    this.status = status;
    this.type = type;
  }
}

export class Api {
  /** ``session`` supplies the token; ``onUnauthorized`` is told about every 401. */
  constructor(session, onUnauthorized) {
    this.session = session;
    this.onUnauthorized = onUnauthorized;
  }

  /** Send a request; the decoded JSON answer, or an ``ApiError``. */
  async request(method, path, { body, query, signal, token } = {}) {
    const headers = { Accept: "application/json" };
    const credential = token ?? this.session.token;
    if (credential) headers.Authorization = `Bearer ${credential}`;
    let payload;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const url = new URL(path.replace(/^\//, ""), ROOT);
    if (query) url.search = new URLSearchParams(query).toString();
    let response;
    try {
      response = await fetch(url, { method, headers, body: payload, signal, cache: "no-store" });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "cannot reach the server; is it running?", "network_error");
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const message = data?.error?.message ?? `${response.status} ${response.statusText}`;
      const error = new ApiError(response.status, message, data?.error?.type ?? "");
      if (response.status === 401 && token === undefined) this.onUnauthorized?.(error);
      throw error;
    }
    return data;
  }

  get(path, query, options = {}) {
    return this.request("GET", path, { ...options, query });
  }

  post(path, body, options = {}) {
    return this.request("POST", path, { ...options, body });
  }

  patch(path, body, options = {}) {
    return this.request("PATCH", path, { ...options, body });
  }

  delete(path, query, options = {}) {
    return this.request("DELETE", path, { ...options, query });
  }
}

/** A path segment, escaped. */
export const seg = (text) => encodeURIComponent(text);
