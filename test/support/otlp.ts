/**
 * A tiny OTLP/HTTP trace receiver for tests. Effect's `OtlpTracer` with
 * `OtlpSerialization.layerJson` posts `ExportTraceServiceRequest` JSON to `/v1/traces`;
 * protobuf bodies are counted but not decoded.
 */
import * as http from "node:http"

/** One received span: its name and its attributes as plain values. */
export interface ReceivedSpan {
  readonly name: string
  readonly traceId: string
  readonly attributes: Readonly<Record<string, unknown>>
  readonly serviceName: string | undefined
}

export interface OtlpReceiver {
  /** The base URL, for `OTEL_EXPORTER_OTLP_ENDPOINT`. */
  readonly url: string
  readonly spans: () => ReadonlyArray<ReceivedSpan>
  /** Bodies that were not JSON (protobuf). */
  readonly undecoded: () => number
  readonly close: () => Promise<void>
}

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)
const arrayOf = (u: unknown): ReadonlyArray<unknown> => (Array.isArray(u) ? u : [])

/** An OTLP `AnyValue` as a plain value. */
const valueOf = (value: unknown): unknown => {
  if (!isRecord(value)) return undefined
  if ("stringValue" in value) return value.stringValue
  if ("boolValue" in value) return value.boolValue
  if ("intValue" in value) return Number(value.intValue)
  if ("doubleValue" in value) return value.doubleValue
  if ("arrayValue" in value && isRecord(value.arrayValue)) return arrayOf(value.arrayValue.values).map(valueOf)
  return undefined
}

const attributesOf = (list: unknown): Record<string, unknown> => {
  const out: Record<string, unknown> = {}
  for (const entry of arrayOf(list)) {
    if (isRecord(entry) && typeof entry.key === "string") out[entry.key] = valueOf(entry.value)
  }
  return out
}

/** Flattens an `ExportTraceServiceRequest` into its spans. */
export const spansOf = (body: unknown): Array<ReceivedSpan> => {
  const spans: Array<ReceivedSpan> = []
  if (!isRecord(body)) return spans
  for (const resourceSpan of arrayOf(body.resourceSpans)) {
    if (!isRecord(resourceSpan)) continue
    const resource = isRecord(resourceSpan.resource) ? attributesOf(resourceSpan.resource.attributes) : {}
    const service = typeof resource["service.name"] === "string" ? resource["service.name"] : undefined
    for (const scopeSpan of arrayOf(resourceSpan.scopeSpans)) {
      if (!isRecord(scopeSpan)) continue
      for (const span of arrayOf(scopeSpan.spans)) {
        if (!isRecord(span) || typeof span.name !== "string") continue
        spans.push({
          name: span.name,
          traceId: typeof span.traceId === "string" ? span.traceId : "",
          attributes: attributesOf(span.attributes),
          serviceName: service
        })
      }
    }
  }
  return spans
}

/** Starts a receiver on a free port of 127.0.0.1. */
export const startOtlpReceiver = async (): Promise<OtlpReceiver> => {
  const spans: Array<ReceivedSpan> = []
  let undecoded = 0
  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (chunk: Buffer) => chunks.push(chunk))
    req.on("end", () => {
      const body = Buffer.concat(chunks)
      if (req.method === "POST" && req.url?.startsWith("/v1/traces")) {
        try {
          spans.push(...spansOf(JSON.parse(body.toString("utf8"))))
        } catch {
          undecoded++
        }
      }
      res.writeHead(200, { "content-type": "application/json" })
      res.end("{}")
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const address = server.address()
  if (address === null || typeof address === "string") throw new Error("the receiver has no TCP address")
  const { port } = address
  return {
    url: `http://127.0.0.1:${port}`,
    spans: () => spans,
    undecoded: () => undecoded,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}
