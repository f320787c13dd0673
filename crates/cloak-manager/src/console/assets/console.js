// cloak console: progressive enhancement only (every page works without it).
// Local times with UTC on hover, copy buttons, the saved credential for an image's registry,
// and live progress of a conversion job.
"use strict";
(function () {
  function live(msg) {
    var el = document.getElementById("live");
    if (el) { el.textContent = msg; }
  }
  function localTimes(root) {
    var fmt;
    try {
      fmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
    } catch (e) { return; }
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) { t.textContent = fmt.format(d); }
    });
  }
  function copyButtons() {
    document.querySelectorAll("button[data-copy]").forEach(function (b) {
      b.addEventListener("click", function () {
        var v = b.getAttribute("data-copy");
        var done = function () { live("Copied " + v.length + " characters"); b.textContent = "Copied"; };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(v).then(done, function () { live("Copy failed: select the text instead"); });
        } else { live("Copy is not available: select the text instead"); }
      });
    });
  }
  function savedCredentials() {
    document.querySelectorAll("[data-saved-for]").forEach(function (hint) {
      var input = document.getElementById(hint.getAttribute("data-saved-for"));
      if (!input) { return; }
      var check = function () {
        var name = input.value.trim();
        if (!name) { hint.textContent = ""; return; }
        fetch("/registries/match?name=" + encodeURIComponent(name), { credentials: "same-origin" })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (m) {
            hint.textContent = m ? "Saved credentials for " + m.url + " (user " + m.username + ") will be used unless you enter credentials for this job."
                                 : "No saved credentials for this registry.";
          }, function () { hint.textContent = ""; });
      };
      input.addEventListener("change", check);
      check();
    });
  }
  function jobProgress() {
    var box = document.querySelector("[data-job]");
    if (!box) { return; }
    var id = box.getAttribute("data-job");
    var bar = box.querySelector("progress");
    var text = box.querySelector(".job-state");
    var tick = function () {
      fetch("/jobs/" + encodeURIComponent(id) + "/state", { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) {
          if (!j) { return; }
          if (j.bytes_total) { bar.max = j.bytes_total; bar.value = j.bytes_done; } else { bar.removeAttribute("value"); }
          text.textContent = j.state + (j.stage ? " · " + j.stage : "") + " · " + j.bytes_done + " bytes";
          if (j.state === "QUEUED" || j.state === "RUNNING") { setTimeout(tick, 1000); }
          else { live("Conversion " + j.state); window.location.reload(); }
        }, function () { setTimeout(tick, 2000); });
    };
    setTimeout(tick, 500);
  }
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    copyButtons();
    savedCredentials();
    jobProgress();
  });
})();
