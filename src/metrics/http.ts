// The HTTP endpoint for Prometheus: GET /metrics returns the text format,
// and every other request gets 404. A failure here (bind, scrape, a broken
// request) is logged and never reaches screening.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { RateLimitedWarning, type Logger } from "../log/logger.js";
import type { ListenAddress } from "../config/load.js";
import { NO_METRICS, type Metrics } from "./metrics.js";
import { PrometheusMetrics } from "./prometheus.js";

/** Time a scraper has to send its request headers and the whole request. */
const HEADERS_TIMEOUT_MS = 5000;
const REQUEST_TIMEOUT_MS = 10_000;

function formatUrl(address: AddressInfo): string {
  const host =
    address.family === "IPv6" ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}/metrics`;
}

export class MetricsServer {
  private readonly server: Server;
  private readonly scrapeWarning: RateLimitedWarning;

  constructor(
    private readonly metrics: PrometheusMetrics,
    private readonly logger: Logger,
  ) {
    this.scrapeWarning = new RateLimitedWarning(logger, 60_000);
    this.server = createServer((request, response) => {
      const path = (request.url ?? "").split("?")[0];
      if (request.method !== "GET" || path !== "/metrics") {
        response.writeHead(404, { "Content-Type": "text/plain" });
        response.end("not found: metrics are at GET /metrics\n");
        return;
      }
      this.metrics.scrape().then(
        (text) => {
          response.writeHead(200, {
            "Content-Type": this.metrics.registry.contentType,
          });
          response.end(text);
        },
        (error: unknown) => {
          this.scrapeWarning.report(
            `metrics scrape failed: ${(error as Error).message}`,
          );
          response.writeHead(500, { "Content-Type": "text/plain" });
          response.end("metrics scrape failed\n");
        },
      );
    });
    this.server.headersTimeout = HEADERS_TIMEOUT_MS;
    this.server.requestTimeout = REQUEST_TIMEOUT_MS;
    this.server.on("clientError", (_error, socket) => socket.destroy());
  }

  /**
   * Listens on `address`; resolves with the bound address, or with
   * undefined after logging the error when binding fails.
   */
  listen(address: ListenAddress): Promise<AddressInfo | undefined> {
    return new Promise((resolve) => {
      const onError = (error: Error): void => {
        this.logger.error(
          `metrics: cannot listen on ${address.host}:${address.port}: ` +
            `${error.message}; metrics are not served. Fix metrics_listen ` +
            "and restart",
        );
        resolve(undefined);
      };
      this.server.once("error", onError);
      this.server.listen(address.port, address.host, () => {
        this.server.off("error", onError);
        this.server.on("error", (error) =>
          this.logger.error(`metrics server: ${error.message}`),
        );
        const bound = this.server.address() as AddressInfo;
        this.logger.info(`serving metrics at ${formatUrl(bound)}`);
        resolve(bound);
      });
    });
  }

  /** Stops listening and closes open scrape connections. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

/**
 * Starts metrics for `address` (metrics_listen), or returns NO_METRICS
 * and no server when it is undefined (metrics off). `bound` is undefined
 * when metrics are off or the address could not be bound.
 */
export async function openMetrics(
  address: ListenAddress | undefined,
  logger: Logger,
): Promise<{
  metrics: Metrics;
  bound: AddressInfo | undefined;
  close: () => Promise<void>;
}> {
  if (address === undefined) {
    return {
      metrics: NO_METRICS,
      bound: undefined,
      close: () => Promise.resolve(),
    };
  }
  const metrics = new PrometheusMetrics(logger);
  const server = new MetricsServer(metrics, logger);
  const bound = await server.listen(address);
  return { metrics, bound, close: () => server.close() };
}
