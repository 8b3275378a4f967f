-- Placeholder: the number of a migration on another branch (dropped when they merge).
SELECT 1;
