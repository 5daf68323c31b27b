/** STUB: replaced by the ReadAccess helper's module at merge. */
import { Context, Effect } from "effect"
import { HttpServerResponse } from "effect/http"
export class ReadAccess extends Context.Service<ReadAccess, {
  readonly allows: (authorization: string | undefined, mount: string) => Effect.Effect<boolean>
  readonly allowsCached: (authorization: string | undefined, mount: string) => boolean
}>()("module-transpile-cache/ReadAccess") {}
export const unauthorized = (): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.jsonUnsafe({ error: "Unauthorized", message: "this realm needs Authorization: Bearer <read token>" }, { status: 401 })

import { Layer, Option, type Redacted, Schema } from "effect"
import * as AdminToken from "./AdminToken.ts"
export class ReadSecretError extends Schema.TaggedError<ReadSecretError>()("ReadSecretError", { message: Schema.String }) {}
export const layer = (options: { readonly readSecret?: Redacted.Redacted<string> | undefined }): Layer.Layer<ReadAccess, ReadSecretError> =>
  Layer.effect(ReadAccess, Effect.gen(function*() {
    const admin = yield* Effect.serviceOption(AdminToken.AdminToken)
    void options
    const check = (authorization: string | undefined) => {
      const presented = AdminToken.bearerOf(authorization)
      return Option.isSome(admin) && presented !== undefined && AdminToken.matches(admin.value.token, presented)
    }
    return ReadAccess.of({ allows: (a) => Effect.succeed(check(a)), allowsCached: (a) => check(a) })
  }))

import { Config } from "effect"
export const readSecretConfig = Config.option(Config.Redacted("MTC_READ_SECRET"))
