"""WhatsApp webhooks -> statuses and inbound messages -> customer callbacks."""
