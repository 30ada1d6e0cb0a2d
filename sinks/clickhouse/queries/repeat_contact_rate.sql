-- Repeat-contact rate over the last {days} days (ending at the latest contact day):
-- customers with a repeat_contact pain point / customers who contacted us. A contact is what
-- the built-in repeat_contact rule counts (streams/engine/builtin_rules.yaml): a call, a
-- store service request or complaint, an SMS reply. Contacts mostly arrive with a phone or
-- loyalty id only: their identity keys are resolved to customers through identity_links;
-- a key not linked (yet) counts as a customer of its own.
-- param: days UInt32 = 30  how many days
WITH
    (SELECT max(day) FROM {db}.contact_keys_daily) AS latest,
    keys AS
    (
        SELECT DISTINCT identity_key
        FROM {db}.contact_keys_daily
        WHERE day > latest - {days:UInt32}
    ),
    (
        SELECT uniqExact(
            if(
                l.customer_id != '',
                l.customer_id,
                if(startsWith(identity_key, 'customer_id:'), substring(identity_key, 13), identity_key)
            )
        )
        FROM keys
        LEFT JOIN
        (
            SELECT identity_key, customer_id
            FROM {db}.identity_links FINAL
            WHERE identity_key IN (SELECT identity_key FROM keys)
        ) AS l USING (identity_key)
    ) AS contacting,
    (
        SELECT uniqExactMerge(customer_ids)
        FROM {db}.pain_points_daily
        WHERE rule_id = 'repeat_contact' AND day > latest - {days:UInt32}
    ) AS repeating
SELECT
    contacting AS contacting_customers,
    repeating AS repeat_customers,
    if(contacting = 0, 0, repeating / contacting) AS rate
