/**
 * Trace export over OTLP/HTTP with Effect's own `effect/observability` modules.
 *
 * Enabled when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL) or
 * `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL, to which `/v1/traces` is appended) is set and
 * `OTEL_SDK_DISABLED` is not `true`; otherwise {@link layer} is `Layer.empty`. Spans are
 * sent as JSON unless `OTEL_EXPORTER_OTLP_PROTOCOL` (or `..._TRACES_PROTOCOL`) is
 * `http/protobuf`. `OTEL_BSP_SCHEDULE_DELAY` (milliseconds, default 5000) sets the export
 * interval; `OTEL_EXPORTER_OTLP_HEADERS` is not read. The service name is
 * `module-transpile-cache` unless `OTEL_SERVICE_NAME` says otherwise.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as FetchHttpClient from "effect/http/FetchHttpClient"
import * as OtlpSerialization from "effect/observability/OtlpSerialization"
import * as OtlpTracer from "effect/observability/OtlpTracer"

/** The service name spans are reported under. */
export const serviceName = "module-transpile-cache"

/** The trace endpoint from the environment, following the OTLP exporter conventions. */
export const endpointConfig: Config.Config<Option.Option<string>> = Config.all({
  traces: Config.option(Config.String("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")),
  base: Config.option(Config.String("OTEL_EXPORTER_OTLP_ENDPOINT")),
  disabled: Config.withDefault(Config.Boolean("OTEL_SDK_DISABLED"), false)
}).pipe(Config.map(({ base, disabled, traces }) => {
  if (disabled) return Option.none()
  if (Option.isSome(traces) && traces.value.trim() !== "") return Option.some(traces.value.trim())
  if (Option.isSome(base) && base.value.trim() !== "") {
    const url = base.value.trim()
    return Option.some(`${url.endsWith("/") ? url.slice(0, -1) : url}/v1/traces`)
  }
  return Option.none()
}))

const optionsConfig = Config.all({
  endpoint: endpointConfig,
  protocol: Config.option(
    Config.String("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").pipe(
      Config.orElse(() => Config.String("OTEL_EXPORTER_OTLP_PROTOCOL"))
    )
  ),
  delay: Config.option(Config.Int("OTEL_BSP_SCHEDULE_DELAY")),
  name: Config.option(Config.String("OTEL_SERVICE_NAME"))
})

/** An OTLP/HTTP trace exporter to `url` (the full traces URL), JSON unless `protocol` is `protobuf`. */
export const layerOtlp = (options: {
  readonly url: string
  readonly protocol?: "json" | "protobuf" | undefined
  readonly exportInterval?: Duration.Input | undefined
  readonly serviceName?: string | undefined
  readonly serviceVersion?: string | undefined
}): Layer.Layer<never> =>
  OtlpTracer.layer({
    url: options.url,
    resource: { serviceName: options.serviceName ?? serviceName, serviceVersion: options.serviceVersion },
    exportInterval: options.exportInterval,
    shutdownTimeout: Duration.seconds(3)
  }).pipe(
    Layer.provide(options.protocol === "protobuf" ? OtlpSerialization.layerProtobuf : OtlpSerialization.layerJson),
    Layer.provide(FetchHttpClient.layer)
  )

/**
 * Trace export configured from the environment (see the module documentation), or
 * `Layer.empty`. Provide it outermost, so that every span of the program is exported;
 * pending spans are flushed when it closes.
 */
export const layer: Layer.Layer<never> = Layer.unwrap(Effect.gen(function*() {
  const config = yield* Effect.option(optionsConfig)
  if (Option.isNone(config)) {
    yield* Effect.logWarning("module-transpile-cache: invalid OTEL_* configuration; traces are not exported")
    return Layer.empty
  }
  const { delay, endpoint, name } = config.value
  if (Option.isNone(endpoint)) return Layer.empty
  const protocol = Option.getOrUndefined(config.value.protocol)?.trim() === "http/protobuf" ? "protobuf" : "json"
  return layerOtlp({
    url: endpoint.value,
    protocol,
    exportInterval: Option.isSome(delay) ? Duration.millis(delay.value) : undefined,
    serviceName: Option.getOrUndefined(name)
  })
}))
