-- A symbol's price moves more than 5% within one minute.
-- @name: MarketPriceJump
-- @severity: warning
SELECT symbol, window_start, window_end, price_min, price_max,
       (price_max - price_min) / price_min AS move
FROM market_1m
WHERE (price_max - price_min) / price_min > 0.05
