// A stand-in for the JS client's declarations, as the tests need them: `log` takes an event name
// declared in YipitEventMap and that event's data. `flask eventlib types` fills YipitEventMap in.
export {};

declare global {
  interface YipitEventMap {}

  interface YipitEventClient {
    log<K extends keyof YipitEventMap>(name: K, data: YipitEventMap[K]): Promise<{ ok: boolean; id: string; status: number }>;
  }

  var yipit: { event: YipitEventClient };
}
