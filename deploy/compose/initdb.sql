-- Run once by the postgres image on an empty data volume, as POSTGRES_USER, after it
-- created POSTGRES_DB (the hubs' database): each instance gets a database of its own.
CREATE DATABASE instance_alpha;
CREATE DATABASE instance_beta;
