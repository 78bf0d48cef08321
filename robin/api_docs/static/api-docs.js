// Starts Swagger UI on robin's OpenAPI document. A file, not an inline script: the page's CSP runs robin's files only.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    // Not the online validator's badge: it would send the document's URL to validator.swagger.io.
    validatorUrl: null,
  });
})();
