// A stand-in for @ember/template-compiler, enough for the demo: `template(source, { eval })`
// returns an object whose render() fills `{{name}}` from the module's scope.
export function template(source, options = {}) {
  const lookup = typeof options.eval === "function" ? options.eval : () => undefined
  return {
    source,
    render() {
      return source.replace(/\{\{\s*([A-Za-z_$][\w$.]*)\s*\}\}/g, (_, expression) => String(lookup(expression)))
    }
  }
}
