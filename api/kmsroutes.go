package api

func (s *Server) kmsRoutes() []route { return nil }
