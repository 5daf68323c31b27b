/** `node --import` entry: registers {@link ./ember-hooks.ts}. */
import { register } from "node:module"

register("./ember-hooks.ts", import.meta.url)
