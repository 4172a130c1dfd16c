"""Channel pushers: keep WooCommerce stores and Amazon/eBay accounts at atp's figures.

    from adapters.pushers.runner import run_pusher, replay_dead_letters

`base` holds the interface a channel implements (`ChannelClient`); the shared machinery is
`pusher` (consume, coalesce, batch, retry, dead-letter), `reconcile`, `figures` (the read
model's figures), `options`, `metrics`, `dlq` (replay) and `runner` (wiring, `atp push`);
one module per channel kind (`woocommerce`, `amazon`, `ebay`) registered in `runner.KINDS`.
"""
