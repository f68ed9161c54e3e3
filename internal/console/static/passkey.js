// passkey.js: the console's WebAuthn ceremonies (sign-in, enrolment, and
// approving or rejecting with a passkey). No inline script: the console's
// Content-Security-Policy allows only this file.
//
// Markup it attaches to:
//   #passkey-login                      the sign-in button (login page)
//   #passkey-enrol                      the enrolment button (enrol page; the
//                                       one-time token is the URL fragment)
//   form.vote[data-request][data-verdict]  approve or reject a request; a
//                                       reject form has an input name=reason.
//                                       After a vote the page reloads.
//   form.logout                         signs out with a fetch carrying the CSRF
//                                       header (the pages' plain sign-out form
//                                       works without it: same-origin POSTs
//                                       keep their Origin under the console's
//                                       Referrer-Policy same-origin)
//   #passkey-status                     where progress and errors are shown
//   meta[name=csrf-token]               sent as X-CSRF-Token on every POST
"use strict";
(function () {
  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  }

  function enc(buf) {
    var bytes = new Uint8Array(buf), s = "";
    for (var i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function dec(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  function status(msg, isError) {
    var el = document.getElementById("passkey-status");
    if (!el) return;
    el.textContent = msg;
    el.className = isError ? "error" : "";
  }

  async function post(path, body) {
    var r = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body),
    });
    var text = await r.text();
    if (!r.ok) throw new Error(text.trim() || r.status + " " + r.statusText);
    return text ? JSON.parse(text) : {};
  }

  function requestOptions(pk) {
    var o = Object.assign({}, pk);
    o.challenge = dec(pk.challenge);
    o.allowCredentials = (pk.allowCredentials || []).map(function (c) {
      return { type: c.type, id: dec(c.id) };
    });
    return o;
  }

  function assertionJSON(cred) {
    var r = cred.response;
    return {
      id: cred.id,
      rawId: enc(cred.rawId),
      type: cred.type,
      response: {
        authenticatorData: enc(r.authenticatorData),
        clientDataJSON: enc(r.clientDataJSON),
        signature: enc(r.signature),
        userHandle: r.userHandle ? enc(r.userHandle) : null,
      },
    };
  }

  async function signIn() {
    status("Waiting for your passkey…");
    var begin = await post("/console/api/login/begin", {});
    var cred = await navigator.credentials.get({ publicKey: requestOptions(begin.publicKey) });
    await post("/console/api/login/finish", { nonce: begin.nonce, credential: assertionJSON(cred) });
    status("Signed in.");
    window.location.assign("/console/");
  }

  async function enrol() {
    var token = window.location.hash.replace(/^#/, "");
    if (!token) throw new Error("this link has no token: use the whole link you were given");
    status("Creating your passkey…");
    var begin = await post("/console/api/enrol/begin", { token: token });
    var pk = Object.assign({}, begin.publicKey);
    pk.challenge = dec(pk.challenge);
    pk.user = Object.assign({}, pk.user, { id: dec(pk.user.id) });
    pk.excludeCredentials = (pk.excludeCredentials || []).map(function (c) {
      return { type: c.type, id: dec(c.id) };
    });
    var cred = await navigator.credentials.create({ publicKey: pk });
    var r = cred.response;
    var done = await post("/console/api/enrol/finish", {
      id: cred.id,
      rawId: enc(cred.rawId),
      type: cred.type,
      response: {
        attestationObject: enc(r.attestationObject),
        clientDataJSON: enc(r.clientDataJSON),
        transports: r.getTransports ? r.getTransports() : [],
      },
    });
    history.replaceState(null, "", window.location.pathname); // the token is spent
    status("Passkey enrolled for " + done.person + ". You are signed in.");
    var fp = document.getElementById("passkey-fingerprint");
    if (fp) {
      fp.querySelector("code").textContent = done.fingerprint;
      fp.hidden = false;
    }
  }

  async function vote(form) {
    var reasonInput = form.querySelector('[name="reason"]');
    var body = {
      request: form.dataset.request,
      verdict: form.dataset.verdict,
      reason: reasonInput ? reasonInput.value : "",
    };
    status("Sign the " + body.verdict + " with your passkey…");
    var begin = await post("/console/api/vote/begin", body);
    var cred = await navigator.credentials.get({ publicKey: requestOptions(begin.publicKey) });
    var res = await post("/console/api/vote/finish", {
      nonce: begin.nonce,
      request: body.request,
      credential: assertionJSON(cred),
    });
    status("Recorded: the request is " + res.state + ".");
    window.location.reload();
  }

  function guard(fn) {
    return function (ev) {
      if (ev) ev.preventDefault();
      fn(ev).catch(function (err) {
        status(String(err.message || err), true);
      });
    };
  }

  async function logout() {
    var r = await fetch("/console/logout", {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf() },
    });
    if (!r.ok) throw new Error((await r.text()).trim() || r.status + " " + r.statusText);
    window.location.assign("/console/login");
  }

  // Forms are handled by delegation, so forms added later work too.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!(form instanceof HTMLFormElement)) return;
    if (form.matches("form.vote")) {
      guard(function () {
        return vote(form);
      })(ev);
    } else if (form.matches("form.logout")) {
      guard(logout)(ev);
    }
  });

  function attach() {
    var login = document.getElementById("passkey-login");
    if (login) login.addEventListener("click", guard(signIn));
    var en = document.getElementById("passkey-enrol");
    if (en) en.addEventListener("click", guard(enrol));
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", attach);
  else attach();
})();
