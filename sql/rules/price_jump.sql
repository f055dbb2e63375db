-- A symbol's price moves more than 5% within one minute.
-- @name: MarketPriceJump
-- @severity: warning
-- @summary: {{ $labels.symbol }} moved {{ $values.move }} within a minute
-- @description: {{ $labels.symbol }} traded between {{ $values.price_min }} and {{ $values.price_max }} in one minute.
-- @runbook_url: https://runbooks.example.com/telemine/market-price-jump
SELECT symbol, window_start, window_end, price_min, price_max,
       (price_max - price_min) / price_min AS move
FROM market_1m
WHERE (price_max - price_min) / price_min > 0.05
