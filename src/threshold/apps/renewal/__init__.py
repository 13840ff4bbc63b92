"""The 90-day contract-renewal reference agent."""
