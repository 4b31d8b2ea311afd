// Must not compile: deal_id is a number.
yipit.event.log("deals.DealClick", { deal_id: "seven" });
