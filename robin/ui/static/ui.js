// Loads the drift findings after the page: a survey (listings, bounded image opens, every CephFS directory) may take a while.
(function () {
  "use strict";
  var section = document.getElementById("drift");
  if (!section) { return; }
  var target = section.querySelector(".loading");
  fetch(section.dataset.src, { credentials: "same-origin", headers: { "Accept": "text/html" } })
    .then(function (response) { return response.text(); })
    .then(function (html) {
      var holder = document.createElement("div");
      holder.className = "drift-body";
      holder.innerHTML = html;  // robin's own server-rendered, escaped fragment
      target.replaceWith(holder);
      section.setAttribute("data-loaded", "true");
    })
    .catch(function (error) {
      target.textContent = "Could not load the drift findings: " + error;
      target.className = "error";
      section.setAttribute("data-loaded", "error");
    });
})();
