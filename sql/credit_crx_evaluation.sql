-- Rendered from sql/credit_evaluation.sql.j2 by `python -m transforms.evaluation.query credit_crx` (evaluation configuration 2026.11.1+db4b2c14).
--
-- The credit evaluation of credit_crx as one query: sampled predictions joined with late
-- ground truth, per model version and window (the whole period, and ISO weeks starting on
-- Monday, UTC): count, labelled, approval rate, log loss, Brier score, AUC, and for each
-- configured slice group its approval-rate and true-positive-rate gaps against the rest.
-- The same figures as pipelines.evaluate writes (a test holds them equal to 1e-9).
--
-- Reads two relations, which the caller defines (README, "The evaluation query in SQL"):
--   predictions(prediction_id, event_time, processed_at, model_name, model_version, score,
--               decision, "A1", "A2")
--   truth(prediction_id, label, label_time)     label 1 = good risk, 0 = bad risk
-- Writes rows (model_name, model_version, window, window_start, slice, slice_value, metric,
-- value, count). Semantics, as in the Beam job: a prediction written twice counts once (the
-- last processed_at), a truth given twice counts once (the last label_time), only labels 0 / 1
-- count, figures other than count and labelled use labelled rows only, and a slice group is
-- compared with the labelled rows of the same window outside it.
WITH latest_prediction AS (
  SELECT prediction_id, event_time, model_name, model_version, score, decision,
         "A1", "A2"
  FROM predictions
  WHERE model_name = 'credit_crx'
  QUALIFY ROW_NUMBER() OVER (PARTITION BY prediction_id ORDER BY processed_at DESC) = 1
),
latest_truth AS (
  SELECT prediction_id, CAST(label AS INTEGER) AS label
  FROM truth
  WHERE CAST(label AS DOUBLE) IN (0, 1) AND label_time IS NOT NULL
  QUALIFY ROW_NUMBER() OVER (PARTITION BY prediction_id ORDER BY label_time DESC) = 1
),
joined AS (
  SELECT p.*, t.label,
         CASE WHEN p.decision = 'approve' THEN 1 ELSE 0 END AS approved,
         CAST(p.event_time AS DATE) AS event_date
  FROM latest_prediction AS p
  LEFT JOIN latest_truth AS t ON t.prediction_id = p.prediction_id
),
windowed AS (
  SELECT *, 'all' AS time_window, 'all' AS window_start FROM joined
  UNION ALL
  SELECT *, 'week' AS time_window,
         CAST(event_date - CAST(ISODOW(event_date) - 1 AS INTEGER) AS VARCHAR) AS window_start
  FROM joined
),
labelled AS (
  SELECT *, LEAST(GREATEST(score, 1e-7), 1 - 1e-7) AS clipped FROM windowed
  WHERE label IS NOT NULL
),
ranked AS (
  -- Average rank of each score among its window's labelled rows (ties share their mean rank).
  SELECT model_name, model_version, time_window, window_start, label,
         RANK() OVER (PARTITION BY model_name, model_version, time_window, window_start
                      ORDER BY score)
         + (COUNT(*) OVER (PARTITION BY model_name, model_version, time_window, window_start,
                           score) - 1) / 2.0 AS mean_rank
  FROM labelled
),
auc AS (
  SELECT model_name, model_version, time_window, window_start,
         (SUM(CASE WHEN label = 1 THEN mean_rank ELSE 0 END)
          - SUM(label) * (SUM(label) + 1) / 2.0)
         / NULLIF(CAST(SUM(label) AS DOUBLE) * SUM(1 - label), 0) AS value,
         COUNT(*) AS count
  FROM ranked
  GROUP BY model_name, model_version, time_window, window_start
),
totals AS (
  SELECT model_name, model_version, time_window, window_start,
         COUNT(*) AS n, SUM(approved) AS approved_n, SUM(label) AS good_n,
         SUM(approved * label) AS approved_good_n,
         -AVG(label * LN(clipped) + (1 - label) * LN(1 - clipped)) AS log_loss,
         AVG((score - label) * (score - label)) AS brier
  FROM labelled
  GROUP BY model_name, model_version, time_window, window_start
),
counts AS (
  SELECT model_name, model_version, time_window, window_start,
         COUNT(*) AS predictions, COUNT(label) AS labelled
  FROM windowed
  GROUP BY model_name, model_version, time_window, window_start
),
slice_rows AS (
  SELECT model_name, model_version, time_window, window_start, approved, label,
         'A1' AS slice, CASE
           WHEN "A1" IS NULL THEN 'missing'
           WHEN CAST("A1" AS VARCHAR) IN ('a') THEN 'a'
           WHEN CAST("A1" AS VARCHAR) IN ('b') THEN 'b'
           ELSE 'other' END AS slice_value
  FROM labelled
  UNION ALL
  SELECT model_name, model_version, time_window, window_start, approved, label,
         'A2_band' AS slice, CASE
           WHEN "A2" IS NULL THEN 'missing'
           WHEN "A2" < 25.0 THEN '<25'
           WHEN "A2" >= 25.0 AND "A2" < 40.0 THEN '25-40'
           WHEN "A2" >= 40.0 THEN '>=40'
           ELSE 'other' END AS slice_value
  FROM labelled
),
slice_groups AS (
  SELECT model_name, model_version, time_window, window_start, slice, slice_value,
         COUNT(*) AS n, SUM(approved) AS approved_n, SUM(label) AS good_n,
         SUM(approved * label) AS approved_good_n
  FROM slice_rows
  GROUP BY model_name, model_version, time_window, window_start, slice, slice_value
)
SELECT model_name, model_version, time_window AS "window", window_start, 'all' AS slice,
       'all' AS slice_value, 'predictions' AS metric, CAST(predictions AS DOUBLE) AS value,
       predictions AS count
FROM counts
UNION ALL
SELECT model_name, model_version, time_window, window_start, 'all', 'all',
       'labelled', CAST(labelled AS DOUBLE), labelled
FROM counts
UNION ALL
SELECT model_name, model_version, time_window, window_start, 'all', 'all',
       'approval_rate', CAST(approved_n AS DOUBLE) / n, n
FROM totals
UNION ALL
SELECT model_name, model_version, time_window, window_start, 'all', 'all', 'log_loss',
       log_loss, n
FROM totals
UNION ALL
SELECT model_name, model_version, time_window, window_start, 'all', 'all', 'brier', brier, n
FROM totals
UNION ALL
SELECT model_name, model_version, time_window, window_start, 'all', 'all', 'auc', value, count
FROM auc
UNION ALL
SELECT g.model_name, g.model_version, g.time_window, g.window_start, g.slice, g.slice_value,
       'approval_rate_diff',
       CAST(g.approved_n AS DOUBLE) / g.n
       - CAST(t.approved_n - g.approved_n AS DOUBLE) / NULLIF(t.n - g.n, 0),
       g.n
FROM slice_groups AS g
JOIN totals AS t
  ON t.model_name = g.model_name AND t.model_version = g.model_version
 AND t.time_window = g.time_window AND t.window_start = g.window_start
UNION ALL
SELECT g.model_name, g.model_version, g.time_window, g.window_start, g.slice, g.slice_value,
       'tpr_diff',
       CAST(g.approved_good_n AS DOUBLE) / NULLIF(g.good_n, 0)
       - CAST(t.approved_good_n - g.approved_good_n AS DOUBLE) / NULLIF(t.good_n - g.good_n, 0),
       g.n
FROM slice_groups AS g
JOIN totals AS t
  ON t.model_name = g.model_name AND t.model_version = g.model_version
 AND t.time_window = g.time_window AND t.window_start = g.window_start
ORDER BY model_version, "window", window_start, slice, slice_value, metric
