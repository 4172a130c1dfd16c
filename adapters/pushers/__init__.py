"""Channel pushers: keep WooCommerce stores and Amazon/eBay accounts at atp's figures.

    from adapters.pushers.runner import run_pusher, replay_dead_letters

`base` holds the interface a channel implements (`ChannelClient`); `runner` the shared
machinery (consume, coalesce, batch, retry, dead-letter, reconcile, metrics); one module per
channel kind (`woocommerce`, `amazon`, `ebay`) registered in `runner.KINDS`.
"""
