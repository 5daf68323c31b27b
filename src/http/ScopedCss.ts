/**
 * Glimmer-scoped CSS over HTTP. The `boxel` pipeline turns each `<style scoped>` into an
 * import of a virtual module `./<file>.<base64 of the scoped CSS>.glimmer-scoped.css`; the
 * realm server answers such a URL by decoding it: `text/css`, no file is read.
 *
 * @since 0.2.0
 */
import { lazyRequire } from "../internal/lazyRequire.ts"

/** glimmer-scoped-css (and the PostCSS it loads), loaded by the first scoped CSS request. */
const scopedCss = lazyRequire<typeof import("glimmer-scoped-css")>(import.meta.url, "glimmer-scoped-css")

/** The suffix of glimmer-scoped-css's virtual modules (its own `isScopedCSSRequest` tests the same). */
const scopedCssSuffix = ".glimmer-scoped.css"

/** Whether a request path (still percent-encoded) names a glimmer-scoped CSS module. */
export const isScopedCssPath = (urlPath: string): boolean => urlPath.endsWith(scopedCssSuffix)

/** The CSS a request path carries, or `undefined` when it does not decode. */
export const scopedCssOf = (urlPath: string): string | undefined => {
  try {
    return scopedCss().decodeScopedCSSRequest(urlPath).css
  } catch {
    return undefined
  }
}
