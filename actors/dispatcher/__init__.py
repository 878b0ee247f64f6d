"""The Dispatcher actor's room: the dispatch cycle, its gate, the hosts it sends work to."""
