-- One-minute bars per market symbol (e.g. spot electricity prices).
SELECT symbol, window_start, window_end,
       min(price)       AS price_min,
       max(price)       AS price_max,
       avg(price)       AS price_avg,
       sum(volume)      AS volume,
       avg(ask - bid)   AS spread_avg,
       count(*)         AS ticks
FROM TUMBLE(market, ts, INTERVAL '1 minute')
GROUP BY symbol, window_start, window_end
