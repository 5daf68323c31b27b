/**
 * Imported first by the public barrels: throws a clear error on an unsupported Node before
 * the rest of the package evaluates (see {@link unsupportedMessage}).
 */
import { unsupportedMessage } from "./nodeVersion.ts"

const message = unsupportedMessage("module-transpile-cache")
if (message !== undefined) throw new Error(message)
