// Mailroom's only script besides htmx (the CSP forbids inline scripts).
// Event delegation on the document, so it also works on content htmx swaps in.
"use strict";

document.addEventListener("click", (event) => {
  const opener = event.target.closest("[data-dialog]");
  if (opener) {
    const dialog = document.getElementById(opener.dataset.dialog);
    if (dialog && typeof dialog.showModal === "function") {
      event.preventDefault();
      dialog.showModal();
    }
    return;
  }
  const copier = event.target.closest("[data-copy]");
  if (copier) {
    const source = document.querySelector(copier.dataset.copy);
    if (source && navigator.clipboard) {
      navigator.clipboard.writeText(source.textContent.trim()).then(() => {
        const label = copier.textContent;
        copier.textContent = "Copied";
        setTimeout(() => { copier.textContent = label; }, 1500);
      });
    }
  }
});

// A boosted page swap keeps the old focus; move it to the first wrong field, or the content.
document.addEventListener("htmx:afterSettle", () => {
  const wrong = document.querySelector("[autofocus]");
  if (wrong) wrong.focus();
});
