// Renders /openapi.yaml with Swagger UI. Kept out of index.html so the page
// runs under a Content-Security-Policy without 'unsafe-inline' scripts.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.yaml", // relative to /docs, so it also works behind a path prefix
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null, // never call validator.swagger.io
    tryItOutEnabled: false,
    persistAuthorization: false,
  });
});
