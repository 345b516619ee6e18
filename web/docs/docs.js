// Renders /openapi.yaml with Swagger UI. Kept out of index.html so the page
// runs under a Content-Security-Policy without 'unsafe-inline' scripts.

// int64 fields are JSON strings in protojson (the description types them
// ["integer", "string"], which Swagger UI shows as 0): show them as strings.
function int64AsString(node) {
  if (Array.isArray(node)) {
    node.forEach(int64AsString);
  } else if (node && typeof node === "object") {
    if (node.format === "int64" && Array.isArray(node.type) && node.type.includes("string")) {
      node.type = "string";
      node.pattern = "^-?[0-9]+$";
      node.example = "42";
    }
    Object.values(node).forEach(int64AsString);
  }
  return node;
}

window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.yaml", // relative to /docs, so it also works behind a path prefix
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    plugins: [
      function () {
        return {
          statePlugins: {
            spec: {
              wrapActions: {
                updateJsonSpec: function (orig) {
                  return function (spec) {
                    return orig(int64AsString(spec));
                  };
                },
              },
            },
          },
        };
      },
    ],
    layout: "BaseLayout",
    validatorUrl: null, // never call validator.swagger.io
    tryItOutEnabled: false,
    persistAuthorization: false,
  });
});
