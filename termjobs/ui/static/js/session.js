// The bearer token, kept in this tab's sessionStorage only: never in the address, a
// cookie or localStorage, so it goes when the tab closes or the user signs out.

const KEY = "termjobs.token";

export class Session {
  constructor() {
    /** true when the server runs with ``--auth none`` (no token needed, none asked for) */
    this.open = false;
  }

  get token() {
    return sessionStorage.getItem(KEY);
  }

  keep(token) {
    sessionStorage.setItem(KEY, token);
  }

  clear() {
    sessionStorage.removeItem(KEY);
  }
}
