"""What an actor sends with: the On-Prem login token, the Cloud bearer."""
