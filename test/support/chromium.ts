/**
 * Debian's Chromium for the browser tests, headless. `npm test` installs it first
 * (test/support/prerequisites.ts); a machine without it fails loudly, never skips.
 */
import { existsSync } from "node:fs"
import { type Browser, chromium } from "playwright-core"
import { which } from "./prerequisites.ts"

/** Where Chromium is: `CHROMIUM_PATH`, else `chromium` on the PATH. */
export const executablePath = process.env.CHROMIUM_PATH ?? which("chromium") ?? "/usr/bin/chromium"

/** Launches headless Chromium; throws when it is missing. */
export const launchChromium = (): Promise<Browser> => {
  if (!existsSync(executablePath)) {
    throw new Error(`no Chromium at ${executablePath}: run npm test (it installs it as root), apt-get install chromium, or set CHROMIUM_PATH`)
  }
  return chromium.launch({ executablePath, args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"] })
}
