// registrar web console: the only script of the pages (no inline script is
// allowed by their Content-Security-Policy). Everything works without it;
// it adds a copy button, confirmations and "select all".
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      const status = document.getElementById("copy-status");
      try {
        await navigator.clipboard.writeText(source.textContent.trim());
        if (status) status.textContent = "Copied.";
      } catch (_) {
        const range = document.createRange();
        range.selectNodeContents(source);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        if (status) status.textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
      }
    });
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  // Passkeys: a form with data-passkey="create" or "get" fetches its
  // options (data-options), asks the browser, puts the answer in its
  // data-field input and is posted as usual.
  if (window.PublicKeyCredential && PublicKeyCredential.parseCreationOptionsFromJSON) {
    for (const form of document.querySelectorAll("form[data-passkey]")) {
      form.hidden = false;
      const status = form.querySelector("[data-passkey-status]");
      const field = form.elements[form.dataset.field];
      form.addEventListener("submit", async (event) => {
        if (field.value) return;
        event.preventDefault();
        if (status) status.textContent = "Waiting for your passkey…";
        const body = new URLSearchParams();
        for (const name of ["csrf", "mfa_token"]) {
          if (form.elements[name]) body.append(name, form.elements[name].value);
        }
        try {
          const res = await fetch(form.dataset.options, { method: "POST", body, credentials: "same-origin" });
          const answer = await res.json();
          if (!res.ok) throw new Error(answer.error ? answer.error.message : "refused");
          const credential = form.dataset.passkey === "create"
            ? await navigator.credentials.create({ publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(answer.publicKey) })
            : await navigator.credentials.get({ publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(answer.publicKey) });
          field.value = JSON.stringify(credential.toJSON());
          form.submit();
        } catch (error) {
          if (status) status.textContent = "The passkey did not work: " + (error.message || error) + ".";
        }
      });
    }
  }
  const all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", () => {
      for (const box of document.querySelectorAll('input[name="user"]')) box.checked = all.checked;
    });
  }
});
