// outbox-relay console: small progressive enhancements. Every page works without this file.
(function () {
  "use strict";
  // Confirmations for buttons that say data-confirm="...".
  document.addEventListener("submit", function (e) {
    var button = e.submitter || e.target.querySelector("[data-confirm]");
    var text = (button && button.getAttribute("data-confirm")) || e.target.getAttribute("data-confirm");
    if (text && !window.confirm(text)) { e.preventDefault(); }
  });
  // Live refresh of the queue: the rows are fetched again every few seconds while the box is ticked
  // and the newest page is shown. The server renders (and escapes) the rows.
  var box = document.getElementById("live");
  var rows = document.getElementById("rows");
  if (box && rows) {
    var timer = null;
    var refresh = function () {
      var url = new URL(window.location.href);
      url.searchParams.set("rows", "1");
      fetch(url.toString(), { credentials: "same-origin", headers: { "accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html !== null) {
            var doc = new DOMParser().parseFromString("<table><tbody>" + html + "</tbody></table>", "text/html");
            var fresh = doc.querySelector("tbody");
            if (fresh) { rows.replaceChildren.apply(rows, Array.prototype.slice.call(fresh.childNodes)); }
            var stamp = document.getElementById("live-stamp");
            if (stamp) { stamp.textContent = "updated " + new Date().toLocaleTimeString(); }
          }
        })
        .catch(function () {});
    };
    var apply = function () {
      if (timer) { clearInterval(timer); timer = null; }
      if (box.checked) { timer = setInterval(refresh, 3000); }
    };
    box.addEventListener("change", apply);
    apply();
  }
})();
