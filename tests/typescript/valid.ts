// Calls the generated declarations must accept, and (marked @ts-expect-error) calls they must
// refuse: `tsc --strict` fails if a marked line compiles.

const click: Promise<{ ok: boolean; id: string }> = yipit.event.log("deals.DealClick", { deal_id: 7, source: "list" });
yipit.event.log("deals.DealClick", { deal_id: 7 });
yipit.event.log("deals.Purchase", { deal_id: 1, amount: "19.90", coupon: null, lines: [{ sku: "A-1", qty: 2 }] });
yipit.event.log("deals.Purchase", { deal_id: 1, amount: 19.9, when: "2024-05-01T12:30:00Z" });
yipit.event.log("users.SignedUp", { email: "a@example.com", plan: "pro", anything: [1, 2] });

// @ts-expect-error: deal_id is a number
yipit.event.log("deals.DealClick", { deal_id: "7" });
// @ts-expect-error: deal_id is required
yipit.event.log("deals.DealClick", { source: "list" });
// @ts-expect-error: source is "list" or "map"
yipit.event.log("deals.DealClick", { deal_id: 7, source: "grid" });
// @ts-expect-error: the schema refuses unknown keys
yipit.event.log("deals.DealClick", { deal_id: 7, extra: true });
// @ts-expect-error: there is no event of that name
yipit.event.log("deals.DealClik", { deal_id: 7 });
// @ts-expect-error: a private event is not declared for browsers
yipit.event.log("ops.Internal", {});
// @ts-expect-error: coupon is a string or null
yipit.event.log("deals.Purchase", { deal_id: 1, amount: "1", coupon: 5 });
// @ts-expect-error: a line's sku is required
yipit.event.log("deals.Purchase", { deal_id: 1, amount: "1", lines: [{ qty: 2 }] });
