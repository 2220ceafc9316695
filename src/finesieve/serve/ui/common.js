// finesieve reviewer UI, shared by the three pages: calls to the JSON API, the session, small DOM helpers.
// Every POST carries the X-CSRF-Token that login and GET /v1/auth/me return: the session cookie is HttpOnly,
// so this script never sees it. Text reaches the page through textContent only, never innerHTML: message texts
// are written by whoever sent the message.
"use strict";

const finesieve = (() => {
  let csrfToken = null;
  let user = null;

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail || `HTTP ${status}`);
      this.status = status;
    }
  }

  function detailOf(body, status) {
    if (body && typeof body.detail === "string") return body.detail;
    if (body && typeof body.message === "string") return body.message;
    return `the server answered HTTP ${status}`;
  }

  // fetch a JSON API path; resolves to the parsed body (null for 204), rejects with ApiError.
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      if (csrfToken) headers["X-CSRF-Token"] = csrfToken;
    }
    const response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 204) return null;
    let parsed = null;
    try {
      parsed = await response.json();
    } catch (_) {
      parsed = null;
    }
    if (!response.ok) throw new ApiError(response.status, detailOf(parsed, response.status));
    return parsed;
  }

  function toLogin() {
    const next = window.location.pathname + window.location.search;
    window.location.assign("/ui/login?next=" + encodeURIComponent(next));
  }

  // Who is logged in; sends the browser to the login page (and never resolves) when nobody is.
  async function requireUser() {
    try {
      user = await api("GET", "/v1/auth/me");
    } catch (err) {
      if (err.status === 401) {
        toLogin();
        return new Promise(() => {});
      }
      throw err;
    }
    csrfToken = user.csrf_token;
    return user;
  }

  function setSession(session) {
    user = session;
    csrfToken = session.csrf_token;
  }

  async function logout() {
    try {
      await api("POST", "/v1/auth/logout");
    } finally {
      csrfToken = null;
      window.location.assign("/ui/login");
    }
  }

  // Fill the header: who is logged in, and the logout button.
  function showUser(session) {
    const who = document.getElementById("who");
    if (who) who.textContent = `${session.username} (${session.role})`;
    const button = document.getElementById("logout");
    if (button) button.addEventListener("click", () => logout());
  }

  // An element with text (never HTML) and attributes.
  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  // A status line for screen readers and eyes (the element has aria-live="polite").
  function say(message, isError) {
    const status = document.getElementById("status");
    if (!status) return;
    status.textContent = message;
    status.classList.toggle("error", Boolean(isError));
  }

  function fmtScore(value) {
    return typeof value === "number" && Number.isFinite(value) ? value.toFixed(3) : "–";
  }

  function fmtRate(value) {
    return typeof value === "number" && Number.isFinite(value) ? `${(100 * value).toFixed(1)}%` : "–";
  }

  function fmtAge(seconds) {
    if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "–";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  return { api, ApiError, requireUser, setSession, logout, showUser, el, clear, say, fmtScore, fmtRate, fmtAge };
})();
