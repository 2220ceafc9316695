// The login page: POST /v1/auth/login, then go where the reviewer was headed (a /ui/ page only) or to the queue.
"use strict";

(() => {
  const form = document.getElementById("login-form");
  const button = document.getElementById("login-button");

  // Only a page of this UI: an address from the query string must not send a reviewer to another site.
  function nextPage() {
    const next = new URLSearchParams(window.location.search).get("next") || "";
    return /^\/ui\/[A-Za-z0-9/_-]*$/.test(next) && next !== "/ui/login" ? next : "/ui/";
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const username = form.username.value.trim();
    const password = form.password.value;
    if (!username || !password) {
      finesieve.say("Enter your username and password.", true);
      (username ? form.password : form.username).focus();
      return;
    }
    button.disabled = true;
    finesieve.say("Logging in…");
    try {
      const session = await finesieve.api("POST", "/v1/auth/login", { username, password });
      finesieve.setSession(session);
      window.location.assign(nextPage());
    } catch (err) {
      if (err.status === 401) finesieve.say("Wrong username or password.", true);
      else if (err.status === 429) finesieve.say("Too many failed attempts: wait a few minutes, then try again.", true);
      else finesieve.say(`Could not log in: ${err.message}`, true);
      form.password.value = "";
      form.password.focus();
    } finally {
      button.disabled = false;
    }
  });
})();
